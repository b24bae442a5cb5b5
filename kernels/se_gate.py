"""SE's gate on pooled vectors, one program per sample:

    p = mean_hw(x)                [or 0.5 * mean + 0.5 * max]        [C]
    h = W1 @ p + b1               (saved pre-activation)             [RD]
    g = gate(W2 @ act(h) + b2)                                       [C]

(act and gate from the activation table: MLP_ACT, GATE codes) and its backward, given
dgate[c] = sum_hw(dy * x) (as pooling partials):

    dz = dgate * gate'                                               [C]  -> dW2, db2
    dh = (W2^T @ dz) * act'(h)                                       [RD] -> dW1, db1
    dp = W1^T @ dh,  mean_coef = dp / HW  [halves and max_coef = dp / (2 * ties) with max]

The hidden vector stays in registers ([BLOCK_RD]); W1 and W2 are walked in
[BLOCK_RD, BLOCK_C] tiles by the four matrix-vector helpers below, which CBAM's
channel gate shares. W1 is [RD, C] and W2 is [C, RD], both contiguous.
"""
import triton
import triton.language as tl
from .layout import next_pow2

from .activations import activation, activation_grad, gate_grad
from .channel_pool import reduce_partials


@triton.jit
def w1_times(w1_ptr, p, r, c, C, RD, ACC: tl.constexpr):
    """(W1[:, c] @ p[c]) for one channel tile: [BLOCK_RD]."""
    w = tl.load(w1_ptr + r[:, None] * C + c[None, :], mask=(r < RD)[:, None] & (c < C)[None, :],
                other=0.0).to(ACC)
    return tl.sum(w * p[None, :], axis=1)


@triton.jit
def w1t_times(w1_ptr, dh, r, c, C, RD, ACC: tl.constexpr):
    """(W1[:, c]^T @ dh) for one channel tile: [BLOCK_C]."""
    w = tl.load(w1_ptr + r[:, None] * C + c[None, :], mask=(r < RD)[:, None] & (c < C)[None, :],
                other=0.0).to(ACC)
    return tl.sum(w * dh[:, None], axis=0)


@triton.jit
def w2_times(w2_ptr, h, r, c, C, RD, ACC: tl.constexpr):
    """(W2[c, :] @ h) for one channel tile: [BLOCK_C]."""
    w = tl.load(w2_ptr + c[None, :] * RD + r[:, None], mask=(r < RD)[:, None] & (c < C)[None, :],
                other=0.0).to(ACC)
    return tl.sum(w * h[:, None], axis=0)


@triton.jit
def w2t_times(w2_ptr, dz, r, c, C, RD, ACC: tl.constexpr):
    """(W2[c, :]^T @ dz[c]) for one channel tile: [BLOCK_RD]."""
    w = tl.load(w2_ptr + c[None, :] * RD + r[:, None], mask=(r < RD)[:, None] & (c < C)[None, :],
                other=0.0).to(ACC)
    return tl.sum(w * dz[None, :], axis=1)


@triton.jit
def gate_logit_grad(dsum_ptr, S, B, C, RD, b, r, gate_ptr, dz_ptr, w2_ptr, GATE: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_RD: tl.constexpr, ACC: tl.constexpr):
    """Sample b's gate backward, dz = dgate * gate' (stored [B, C]), and W2^T @ dz
    [BLOCK_RD]; dgate comes as [S, B, C] pooling partials. Shared by SE's and CBAM's gates."""
    t = tl.zeros([BLOCK_RD], dtype=ACC)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        dg = reduce_partials(dsum_ptr, S, B, C, b, c, cmask, False, ACC)
        g = tl.load(gate_ptr + b * C + c, mask=cmask, other=0.0).to(ACC)
        dz = tl.where(cmask, gate_grad(dg, g, GATE), 0.0)
        tl.store(dz_ptr + b * C + c, dz, mask=cmask)
        t += w2t_times(w2_ptr, dz, r, c, C, RD, ACC)
    return t


@triton.jit
def store_pooled(s, mx, HW, b, c, cmask, C, pooled_ptr, pool_max_ptr, WITH_MAX: tl.constexpr):
    """Sample b's pooled vector at channels c from the sum (and max) over H*W: the mean, or
    0.5 * mean + 0.5 * max WITH_MAX (the max stored too); stored and returned (0 off-range)."""
    p = s / HW
    if WITH_MAX:
        tl.store(pool_max_ptr + b * C + c, mx, mask=cmask)
        p = 0.5 * p + 0.5 * mx
    p = tl.where(cmask, p, 0.0)
    tl.store(pooled_ptr + b * C + c, p, mask=cmask)
    return p


@triton.jit
def store_hidden(h, b1_ptr, hidden_ptr, b, r, RD, HAS_BIAS: tl.constexpr, MLP_ACT: tl.constexpr,
                 ACC: tl.constexpr):
    """h (+ b1) stored as sample b's hidden pre-activation; returns act(h) (0 off-range)."""
    rmask = r < RD
    if HAS_BIAS:
        h += tl.load(b1_ptr + r, mask=rmask, other=0.0).to(ACC)
    tl.store(hidden_ptr + b * RD + r, h, mask=rmask)
    return tl.where(rmask, activation(h, MLP_ACT), 0.0)


@triton.jit
def gate_of(w2_ptr, b2_ptr, h, r, c, C, RD, HAS_BIAS: tl.constexpr, GATE: tl.constexpr, ACC: tl.constexpr):
    """gate(W2[c, :] @ h (+ b2[c])) for one channel tile."""
    z = w2_times(w2_ptr, h, r, c, C, RD, ACC)
    if HAS_BIAS:
        z += tl.load(b2_ptr + c, mask=c < C, other=0.0).to(ACC)
    return activation(z, GATE)


@triton.jit
def se_gate_row(sum_ptr, max_ptr, S, B, C, RD, HW, w1_ptr, b1_ptr, w2_ptr, b2_ptr,
                pooled_ptr, pool_max_ptr, hidden_ptr, gate_ptr, b,
                HAS_BIAS: tl.constexpr, WITH_MAX: tl.constexpr, MLP_ACT: tl.constexpr, GATE: tl.constexpr,
                BLOCK_C: tl.constexpr, BLOCK_RD: tl.constexpr, ACC: tl.constexpr):
    """Sample b's gate from its [S, B, C] pooling partials: pooled (and pool_max), hidden and
    gate rows stored."""
    r = tl.arange(0, BLOCK_RD)
    h = tl.zeros([BLOCK_RD], dtype=ACC)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        s = reduce_partials(sum_ptr, S, B, C, b, c, cmask, False, ACC)
        mx = s
        if WITH_MAX:
            mx = reduce_partials(max_ptr, S, B, C, b, c, cmask, True, ACC)
        p = store_pooled(s, mx, HW, b, c, cmask, C, pooled_ptr, pool_max_ptr, WITH_MAX)
        h += w1_times(w1_ptr, p, r, c, C, RD, ACC)
    h = store_hidden(h, b1_ptr, hidden_ptr, b, r, RD, HAS_BIAS, MLP_ACT, ACC)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        tl.store(gate_ptr + b * C + c, gate_of(w2_ptr, b2_ptr, h, r, c, C, RD, HAS_BIAS, GATE, ACC), mask=c < C)


@triton.jit
def se_gate_forward_kernel(
    sum_ptr, max_ptr, S, B, C, RD, HW,
    w1_ptr, b1_ptr, w2_ptr, b2_ptr,
    pooled_ptr, pool_max_ptr, hidden_ptr, gate_ptr, b0,
    HAS_BIAS: tl.constexpr, WITH_MAX: tl.constexpr, MLP_ACT: tl.constexpr, GATE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_RD: tl.constexpr, ACC: tl.constexpr,
):
    se_gate_row(sum_ptr, max_ptr, S, B, C, RD, HW, w1_ptr, b1_ptr, w2_ptr, b2_ptr,
                pooled_ptr, pool_max_ptr, hidden_ptr, gate_ptr, (b0 + tl.program_id(0)).to(tl.int64),
                HAS_BIAS, WITH_MAX, MLP_ACT, GATE, BLOCK_C, BLOCK_RD, ACC)


@triton.jit
def se_gate_backward_row(dsum_ptr, cnt_ptr, S, B, C, RD, HW, w1_ptr, w2_ptr, hidden_ptr, gate_ptr,
                         dz_ptr, dh_ptr, mean_coef_ptr, max_coef_ptr, b,
                         WITH_MAX: tl.constexpr, MLP_ACT: tl.constexpr, GATE: tl.constexpr,
                         BLOCK_C: tl.constexpr, BLOCK_RD: tl.constexpr, ACC: tl.constexpr):
    """Sample b's gate backward from its [S, B, C] partials of sum_hw(dy * x) (and tie counts):
    dz, dh, mean_coef (and max_coef) rows stored."""
    r = tl.arange(0, BLOCK_RD)
    rmask = r < RD
    dh = gate_logit_grad(dsum_ptr, S, B, C, RD, b, r, gate_ptr, dz_ptr, w2_ptr, GATE, BLOCK_C, BLOCK_RD, ACC)
    h = tl.load(hidden_ptr + b * RD + r, mask=rmask, other=0.0).to(ACC)
    dh = tl.where(rmask, activation_grad(dh, h, MLP_ACT), 0.0)
    tl.store(dh_ptr + b * RD + r, dh, mask=rmask)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        dp = w1t_times(w1_ptr, dh, r, c, C, RD, ACC)
        if WITH_MAX:
            ties = reduce_partials(cnt_ptr, S, B, C, b, c, cmask, False, ACC)
            ties = tl.where(cmask, ties, 1.0)
            tl.store(max_coef_ptr + b * C + c, 0.5 * dp / ties, mask=cmask)
            dp = 0.5 * dp
        tl.store(mean_coef_ptr + b * C + c, dp / HW, mask=cmask)


@triton.jit
def se_gate_backward_kernel(
    dsum_ptr, cnt_ptr, S, B, C, RD, HW,
    w1_ptr, w2_ptr, hidden_ptr, gate_ptr,
    dz_ptr, dh_ptr, mean_coef_ptr, max_coef_ptr, b0,
    WITH_MAX: tl.constexpr, MLP_ACT: tl.constexpr, GATE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_RD: tl.constexpr, ACC: tl.constexpr,
):
    se_gate_backward_row(dsum_ptr, cnt_ptr, S, B, C, RD, HW, w1_ptr, w2_ptr, hidden_ptr, gate_ptr,
                         dz_ptr, dh_ptr, mean_coef_ptr, max_coef_ptr, (b0 + tl.program_id(0)).to(tl.int64),
                         WITH_MAX, MLP_ACT, GATE, BLOCK_C, BLOCK_RD, ACC)


def gate_tiles(C: int, RD: int, elems: int = 4096) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_RD): the whole hidden vector in one block, C walked in tiles."""
    block_rd = next_pow2(RD)
    block_c = min(next_pow2(C), max(elems // block_rd, 16))
    return block_c, block_rd
