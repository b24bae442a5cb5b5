"""CBAM launchers: the passes over x-sized tensors, around the spatial gate (the small
[B, 2, H, W] conv / BN / sigmoid work: kernels/spatial_gate.py, which the ops layer runs
between them).

Forward:   cbam_channel_forward  pool x -> channel gate ca -> maps of x * ca   (per chunk)
           [spatial gate: maps -> sa, over all samples (BN's batch statistics)]
           cbam_apply            y = x * ca * sa                                (per chunk)
Backward:  cbam_spatial_grad_inputs  dsa = sum_c(dy * x * ca), channel-max ties (per chunk)
           [spatial gate backward: dsa -> dmaps and the conv / BN gradients]
           cbam_channel_backward dca partials -> channel gate backward -> dx    (per chunk)
           then the MLP weight gradients over the batch.

x is read three times forward (pool and maps of a chunk back to back, so the second is
served from L2) and never written besides y; dy and x are read three times backward.
"""
import torch

from . import config
from .batch_outer import mlp_weight_grads
from .cbam_gate import cbam_channel_gate_backward_kernel, cbam_channel_gate_forward_kernel
from .cbam_grad import cbam_channel_grad, cbam_input_grad
from .channel_gate import chunk_size, sample_chunks
from .channel_pool import channel_pool, new_partials, plan_pool
from .channel_scale import channel_scale
from .layout import acc_dtype, acc_torch_dtype, channel_view
from .mlp_gate import mlp_gate_backward, mlp_gate_forward, use_mlp_gate
from .se_gate import gate_tiles
from .spatial_pool import plan_spatial, spatial_pool
from .launch import fast

#: [BLOCK_C, BLOCK_RD] weight tile of the channel gate kernels: half of SE's, since they apply
#: the MLP to two vectors (mean and max) per tile. With 4096 elements ptxas spilled on sm_90
#: at RD = 64..128 (28 B with triton 3.9, 272 B with 3.6; tests/aot_compile.py).
CBAM_GATE_ELEMS = 2048


def cbam_channel_forward(x, w1, b1, w2, b2):
    """x [B, C, H, W]; w1 [RD, C(,1,1)], b1 [RD] | None; w2 [C, RD(,1,1)], b2 [C] | None.
    w2 None: Ultralytics' channel gate, ca = sigmoid(W1 mean_hw(x) + b1) with W1 [C, C] (no max
    pool, no second layer).

    Returns (ca [B, C], pooled [2B, C] (mean rows then max rows; [B, C] means with one layer),
    hidden [2B, RD] (pre-ReLU; [B, 0] with one layer), maps [B, 2, H, W] (mean_c and max_c of
    x * ca)), in float32 (float64).
    """
    B, C, H, W = x.shape
    RD = w1.shape[0]
    dt, dev = acc_torch_dtype(x.dtype), x.device
    one_layer = w2 is None
    w1 = w1.reshape(RD, C).contiguous()
    w2 = None if one_layer else w2.reshape(C, RD).contiguous()
    has_bias = b1 is not None
    xv = channel_view(x)
    chunk = chunk_size(x)
    plan, splan = plan_pool(xv, chunk, C, H * W), plan_spatial(xv, chunk, C, H * W)
    parts = new_partials(plan, B, C, x, with_max=not one_layer)
    ca = config.new_buffer((B, C), dt, dev)
    pooled = config.new_buffer((B if one_layer else 2 * B, C), dt, dev)
    hidden = config.new_buffer((B, 0) if one_layer else (2 * B, RD), dt, dev)
    maps = config.new_buffer((B, 2, H, W), dt, dev)
    block_c, block_rd = gate_tiles(C, RD, elems=CBAM_GATE_ELEMS)
    b1 = b1.contiguous() if has_bias else None
    b2 = b2.contiguous() if has_bias and not one_layer else None
    parallel = one_layer or use_mlp_gate(x, w1)
    for b0, nb in sample_chunks(x):
        channel_pool(xv, plan, parts, b0, nb)
        if parallel:
            mlp_gate_forward(parts, B, C, RD, H * W, w1, b1, w2, b2, pooled, None, hidden, ca, b0, nb,
                             acc_dtype(x.dtype), paired=not one_layer)
        else:
            fast(cbam_channel_gate_forward_kernel)[(nb,)](
                parts.sums, parts.maxs, plan.n_splits, B, C, RD, H * W,
                w1, b1 if has_bias else w1, w2, b2 if has_bias else w2, pooled, hidden, ca, b0,
                HAS_BIAS=has_bias, BLOCK_C=block_c, BLOCK_RD=block_rd, ACC=acc_dtype(x.dtype), num_warps=4,
            )
        spatial_pool(xv, ca, splan, b0, nb, out_sum=maps, out_max=maps[:, 1], out_sb=2 * H * W)
    return ca, pooled, hidden, maps


def cbam_apply(x, ca, sa):
    """y = x * ca[b, c] * sa[b, h, w] in x's dtype and memory format; ca [B, C], sa [B, 1, H, W]."""
    B, C, H, W = x.shape
    xv = channel_view(x)
    y = config.new_like(xv.tensor)
    yv = channel_view(y)
    plan = plan_pool(xv, chunk_size(x), C, H * W)
    sa = sa.reshape(B, H * W).contiguous()
    for b0, nb in sample_chunks(x):
        channel_scale(xv, yv, ca, plan, b0, nb, spatial=sa)
    return y


def cbam_spatial_grad_inputs(dy, x, ca, maps):
    """(dsa [B, 1, H, W] = sum_c(dy * x * ca), ties [B, 1, H, W] = #(x * ca == max map))."""
    B, C, H, W = x.shape
    xv, dyv = channel_view(x), channel_view(dy)
    splan = plan_spatial(xv, chunk_size(x), C, H * W)
    dsa = config.new_buffer((B, 1, H, W), maps.dtype, x.device)
    ties = config.new_buffer((B, 1, H, W), maps.dtype, x.device)
    for b0, nb in sample_chunks(x):
        spatial_pool(xv, ca, splan, b0, nb, out_sum=dsa, out_sb=H * W, dy=dyv, out_cnt=ties,
                     ref_max=maps[:, 1], ref_sb=2 * H * W)
    return dsa, ties


def cbam_channel_backward(dy, x, w1, w2, has_bias: bool, ca, pooled, hidden, maps, sa, k_mean, k_max):
    """dx and the channel-MLP gradients, given the spatial backward's per-pixel coefficients
    k_mean = dmap_mean / C and k_max = dmap_max / ties ([B, 1, H, W] each). w2 None: the one-layer
    channel gate of cbam_channel_forward.

    Returns (dx, dw1, db1 | None, dw2 | None, db2 | None); deterministic (no atomics).
    """
    B, C, H, W = x.shape
    RD = w1.shape[0]
    dt, dev = acc_torch_dtype(x.dtype), x.device
    one_layer = w2 is None
    w1f = w1.reshape(RD, C).contiguous()
    w2f = None if one_layer else w2.reshape(C, RD).contiguous()
    xv, dyv = channel_view(x), channel_view(dy)
    dx = config.new_like(xv.tensor)
    dxv = channel_view(dx)
    plan = plan_pool(xv, chunk_size(x), C, H * W)
    parts = new_partials(plan, B, C, x, with_max=False, with_counts=not one_layer)
    sa, k_mean, k_max = (t.reshape(B, H * W).contiguous() for t in (sa, k_mean, k_max))
    pool_max = None if one_layer else pooled[B:]
    dv = None if one_layer else config.new_buffer((B, C), dt, dev)
    dh = config.new_buffer((B if one_layer else 2 * B, RD), dt, dev)
    mean_coef = config.new_buffer((B, C), dt, dev)
    max_coef = None if one_layer else config.new_buffer((B, C), dt, dev)
    block_c, block_rd = gate_tiles(C, RD, elems=CBAM_GATE_ELEMS)
    vectors = dict(ca=ca, pool_max=pool_max, sa=sa, k_mean=k_mean, maps=maps, k_max=k_max)
    parallel = one_layer or use_mlp_gate(x, w1)
    for b0, nb in sample_chunks(x):
        cbam_channel_grad(xv, dyv, plan, parts, b0, nb, **vectors)
        if parallel:
            mlp_gate_backward(parts, B, C, RD, H * W, w1f, w2f, hidden, ca, dv, dh, mean_coef, max_coef, b0, nb,
                              acc_dtype(x.dtype), paired=not one_layer)
        else:
            fast(cbam_channel_gate_backward_kernel)[(nb,)](
                parts.sums, parts.counts, plan.n_splits, B, C, RD, H * W, w1f, w2f, hidden, ca,
                dv, dh, mean_coef, max_coef, b0,
                BLOCK_C=block_c, BLOCK_RD=block_rd, ACC=acc_dtype(x.dtype), num_warps=4,
            )
        cbam_input_grad(dyv, xv, dxv, plan, b0, nb, mean_coef=mean_coef, max_coef=max_coef, **vectors)
    return (dx, *mlp_weight_grads(None if one_layer else torch.cat([dv, dv]), hidden, dh, pooled, w1, w2, has_bias))
