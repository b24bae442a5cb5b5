"""PSA (EPSANet) attention tail launchers, after the four branch convs:

    s_p = sigmoid(fc2(relu(fc1(mean_hw x_p))))      one SE, shared by the P splits
    a   = softmax over p of s_p                      per (sample, channel)
    out = cat(x_{P-1} * a_{P-1}, ..., x_0 * a_0)     reversed order, as EPSANet's code

The P splits stay separate tensors (the convs' outputs): each is read once to pool and
once to be weighted into its channel slice of ``out``; no stacked copy is made. Vectors
are [P * B, C] row blocks (row p * B + b), so SE's gate kernels and batch_outer run on
all splits at once. Unlike SE/ECA there is no L2 chunking here yet (one pass over all
samples per stage).
"""

from .activations import RELU, SIGMOID
from . import config
from .batch_outer import mlp_weight_grads
from .channel_pool import channel_pool, new_partials
from .channel_scale import channel_scale, channel_scale_backward
from .layout import cdiv, channel_view, suggested_memory_format
from .path_sum import branches
from .se_gate import gate_tiles, se_gate_backward_kernel, se_gate_forward_kernel
from .split_softmax import softmax_block_c, split_softmax_backward_kernel, split_softmax_kernel
from .launch import fast


def _output_slice(out, P, C, p):
    """The channel slice of ``out`` that split p fills (reversed order)."""
    return out[:, (P - 1 - p) * C:(P - p) * C]


def psa_forward(xs, w1, b1, w2, b2):
    """xs: P tensors [B, C, H, W] (same shape and dtype); SE weights w1 [RD, C(,1,1)],
    b1 [RD] | None, w2 [C, RD(,1,1)], b2 [C] | None.

    Returns (out [B, P*C, H, W] in xs[0]'s memory format, pooled [P*B, C], hidden [P*B, RD],
    se [P*B, C] (sigmoid outputs), att [P*B, C] (softmax weights)).
    """
    P, B, C, H, W, dt, acc, dev, views, plan = branches(xs)
    x0, RD = xs[0], w1.shape[0]
    w1, w2 = w1.reshape(RD, C).contiguous(), w2.reshape(C, RD).contiguous()
    has_bias = b1 is not None
    parts = new_partials(plan, P * B, C, x0, with_max=False)
    for p, v in enumerate(views):
        channel_pool(v, plan, parts, 0, B, row0=p * B)
    pooled, se = config.new_buffer((P * B, C), dt, dev), config.new_buffer((P * B, C), dt, dev)
    hidden, att = config.new_buffer((P * B, RD), dt, dev), config.new_buffer((P * B, C), dt, dev)
    block_c, block_rd = gate_tiles(C, RD)
    fast(se_gate_forward_kernel)[(P * B,)](
        parts.sums, parts.sums, plan.n_splits, P * B, C, RD, H * W,
        w1, b1.contiguous() if has_bias else w1, w2, b2.contiguous() if has_bias else w2,
        pooled, pooled, hidden, se, 0,
        HAS_BIAS=has_bias, WITH_MAX=False, MLP_ACT=RELU, GATE=SIGMOID, BLOCK_C=block_c, BLOCK_RD=block_rd, ACC=acc,
        num_warps=4)
    sb = softmax_block_c(C)
    fast(split_softmax_kernel)[(B, cdiv(C, sb))](se, att, B, C, P=P, BLOCK_C=sb, ACC=acc, num_warps=4)
    out = config.new_buffer((B, P * C, H, W), x0.dtype, dev, suggested_memory_format(x0))
    for p, v in enumerate(views):
        channel_scale(v, channel_view(_output_slice(out, P, C, p)), att[p * B:(p + 1) * B], plan, 0, B)
    return out, pooled, hidden, se, att


def psa_backward(dout, xs, w1, w2, has_bias: bool, pooled, hidden, se, att):
    """Gradients of psa_forward: ([dx_p for each split], dw1, db1 | None, dw2, db2 | None)."""
    P, B, C, H, W, dt, acc, dev, views, plan = branches(xs)
    x0, RD = xs[0], w1.shape[0]
    w1f, w2f = w1.reshape(RD, C).contiguous(), w2.reshape(C, RD).contiguous()
    dys = [channel_view(_output_slice(dout, P, C, p)) for p in range(P)]
    parts = new_partials(plan, P * B, C, x0, with_max=False)
    for p in range(P):
        channel_pool(views[p], plan, parts, 0, B, dy=dys[p], row0=p * B)
    ds = config.new_buffer((1, P * B, C), dt, dev)
    sb = softmax_block_c(C)
    fast(split_softmax_backward_kernel)[(B, cdiv(C, sb))](
        parts.sums, plan.n_splits, att, ds, B, C, P=P, BLOCK_C=sb, ACC=acc, num_warps=4)
    dz = config.new_buffer((P * B, C), dt, dev)
    dh = config.new_buffer((P * B, RD), dt, dev)
    mean_coef = config.new_buffer((P * B, C), dt, dev)
    block_c, block_rd = gate_tiles(C, RD)
    fast(se_gate_backward_kernel)[(P * B,)](
        ds, ds, 1, P * B, C, RD, H * W, w1f, w2f, hidden, se, dz, dh, mean_coef, mean_coef, 0,
        WITH_MAX=False, MLP_ACT=RELU, GATE=SIGMOID, BLOCK_C=block_c, BLOCK_RD=block_rd, ACC=acc, num_warps=4)
    dxs = []
    for p in range(P):
        dx = config.new_like(views[p].tensor)
        rows = slice(p * B, (p + 1) * B)
        channel_scale_backward(dys[p], views[p], channel_view(dx), att[rows], mean_coef[rows], plan, 0, B)
        dxs.append(dx)
    return (dxs, *mlp_weight_grads(dz, hidden, dh, pooled, w1, w2, has_bias))
