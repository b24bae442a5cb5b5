"""SK (Selective Kernel) attention tail launchers, after the P branch convs:

    s   = mean_hw(sum_p x_p);  u = BN(W_r s);  att = softmax_p(W_s relu(u));  y = sum_p att_p * x_p

Forward: path_pool reads every path once (the sum over paths is never written), the two
gate launches (kernels.sk_gate, each per sample and channel tile) turn the [B, C]
partials into att [B, P*C], path_combine
reads every path a second time and writes y once. Unlike SE's pipeline there are no L2
chunks: in training BatchNorm normalises over the whole batch, so no sample's gate exists
before every sample is pooled.

Backward: path_pool with dy reads dy and the paths once for datt = sum_hw(dy * x_p), the gate
backward gives coef = dmean / HW, path_combine_backward reads dy once more and writes every
dx_p = dy * att_p + coef; then the weight gradients as fixed-order sums over the batch.
"""
from . import config
from .activations import RELU
from .arrival import arrival_counters
from .batch_outer import Outer, batch_outer_pair
from .layout import cdiv, channel_view, next_pow2
from .path_sum import branches, path_combine, path_combine_backward, path_groups, path_pool
from .se_gate import gate_tiles
from .sk_gate import sk_bn_backward_kernel, sk_reduce_kernel, sk_select_backward_kernel, sk_select_kernel
from .launch import fast


def select_block_c(C: int, A: int) -> int:
    """Channel tile of the fc_select kernels and of the BatchNorm backward (one program each):
    [BLOCK_A, BLOCK_C] tiles of about 1024 elements, since the select kernels' path loops are unrolled
    (4096-element tiles spilled on sm_90 at P >= 3) and the BatchNorm backward's 4096-element tile
    spilled at 300 channels (sm_90, ptxas: 255 registers, 72 bytes fp32, 1320 fp64)."""
    return gate_tiles(C, A, elems=1024)[0]


def rows_tile(rows: int, block_a: int) -> int:
    """Rows per [rows, BLOCK_A] tile (about 4096 elements) of the fixed-order sums over rows: the
    batch statistics over z [B, A], a sample's du partials [T, A]."""
    return min(next_pow2(rows), max(4096 // block_a, 1))


def sk_forward(xs, w_reduce, w_select, gamma, beta, running_mean, running_var, training: bool, eps: float):
    """xs: P tensors [B, C, H, W] (same shape and dtype); w_reduce [A, C(,1,1)],
    w_select [P*C, A(,1,1)]; BatchNorm gamma, beta [A]; running_mean/var [A] (used unless training).

    Returns (y [B, C, H, W] in xs[0]'s memory format, s [B, C] (pooled sum), z [B, A] (fc_reduce
    output), u [B, A] (BN output), att [B, P*C] (softmax weights), mean [A], var [A] (what BN
    normalised with: batch mean and biased variance in training, else the running ones)).
    """
    P, B, C, H, W, dt, acc, dev, views, plan = branches(xs, common_strides=True)
    A = w_reduce.shape[0]
    wr, ws = w_reduce.reshape(A, C).contiguous(), w_select.reshape(P * C, A).contiguous()
    sums = config.new_buffer((len(path_groups(P)) * plan.n_splits, B, C), dt, dev)
    path_pool(views, plan, sums)
    s, z = config.new_buffer((B, C), dt, dev), config.new_buffer((B, A), dt, dev)
    u, att = config.new_buffer((B, A), dt, dev), config.new_buffer((B, P * C), dt, dev)
    mean, var = config.new_buffer((A,), dt, dev), config.new_buffer((A,), dt, dev)
    block_c, block_a = gate_tiles(C, A)
    tiles = cdiv(C, block_c)
    z_part = config.new_buffer((tiles, B, A), dt, dev)
    fast(sk_reduce_kernel)[(B, tiles)](sums, sums.shape[0], B, C, A, H * W, wr, s, z_part, arrival_counters(dev, B + 1),
                                       z, mean, var, TRAINING=training, BLOCK_C=block_c, BLOCK_A=block_a,
                                       BLOCK_T=rows_tile(tiles, block_a), BLOCK_B=rows_tile(B, block_a),
                                       ACC=acc, num_warps=4)
    stats = (mean, var) if training else (running_mean, running_var)
    sel_c = select_block_c(C, A)
    fast(sk_select_kernel)[(B, cdiv(C, sel_c))](z, C, A, ws, gamma, beta, *stats, float(eps), u, att, mean, var,
                                                P=P, COPY_STATS=not training, BLOCK_C=sel_c, BLOCK_A=block_a,
                                                ACC=acc, num_warps=4)
    y = config.new_like(views[0].tensor)
    path_combine(views, channel_view(y), att, plan)
    return y, s, z, u, att, mean, var


def sk_backward(dy, xs, w_reduce, w_select, gamma, eps: float, training: bool, s, z, u, att, mean, var):
    """Gradients of sk_forward: ([dx_p for each path], dw_reduce, dgamma, dbeta, dw_select),
    weight gradients in the weights' shapes and dtypes. Deterministic: no atomics."""
    P, B, C, H, W, dt, acc, dev, views, plan = branches(xs, common_strides=True)
    A = w_reduce.shape[0]
    wr, ws = w_reduce.reshape(A, C).contiguous(), w_select.reshape(P * C, A).contiguous()
    dyv = channel_view(dy)
    datt = config.new_buffer((plan.n_splits, B * P, C), dt, dev)
    path_pool(views, plan, datt, dy=dyv)
    dlogit, du = config.new_buffer((B, P * C), dt, dev), config.new_buffer((B, A), dt, dev)
    block_c, block_a = gate_tiles(C, A)
    sel_c = select_block_c(C, A)
    tiles = cdiv(C, sel_c)
    du_part = config.new_buffer((tiles, B, A), dt, dev)
    dgamma, dbeta = config.new_buffer((A,), dt, dev), config.new_buffer((A,), dt, dev)
    fast(sk_select_backward_kernel)[(B, tiles)](datt, plan.n_splits, B, C, A, ws, u, att, dlogit, du_part,
                                                arrival_counters(dev, B + 1), du, z, mean, var, float(eps),
                                                dgamma, dbeta, P=P, BLOCK_C=sel_c, BLOCK_A=block_a,
                                                BLOCK_T=rows_tile(tiles, block_a), BLOCK_B=rows_tile(B, block_a),
                                                ACC=acc, num_warps=4)
    dz, coef = config.new_buffer((B, A), dt, dev), config.new_buffer((B, C), dt, dev)
    fast(sk_bn_backward_kernel)[(B, tiles)](du, z, mean, var, gamma, float(eps), B, C, A, H * W, wr,
                                            dz, coef, dgamma, dbeta, TRAINING=training, BLOCK_C=sel_c,
                                            BLOCK_A=block_a, ACC=acc, num_warps=4)
    dxs = [config.new_like(v.tensor) for v in views]
    path_combine_backward(dyv, [channel_view(d) for d in dxs], att, coef, plan)
    dws = config.new_buffer((P * C, A), w_select.dtype, dev)
    dwr = config.new_buffer((A, C), w_reduce.dtype, dev)
    batch_outer_pair(Outer(dlogit, u, dws, v_act=RELU), Outer(dz, s, dwr))
    return (dxs, dwr.reshape(w_reduce.shape), dgamma.to(gamma.dtype), dbeta.to(gamma.dtype),
            dws.reshape(w_select.shape))
