"""ECA's gate on pooled vectors: a K-tap conv across channels, then sigmoid.

    p = mean_hw(x)                                                [C]
    z[c] = sum_j w[j] * p[c + j - PAD] (+ bias)   PAD = (K - 1) // 2
    g = sigmoid(z)

Out-of-range channels read zero (EcaModule) or wrap around (CecaModule, circular).
Backward, from dgate[c] = sum_hw(dy * x) (as pooling partials):

    dz = dgate * g * (1 - g)
    dp[c] = sum_j w[j] * dz[c - j + PAD],  mean_coef = dp / HW
    dw[j] = sum_{b,c} dz[b, c] * p[b, c + j - PAD],  dbias = sum dz

One program per (sample, channel block); neighbours' values are recomputed from the
partials instead of being exchanged between programs.
"""
import triton
import triton.language as tl
from .layout import next_pow2

from .channel_pool import reduce_partials
from .activations import sigmoid


@triton.jit
def _tap(c, shift, C, CIRCULAR: tl.constexpr):
    """Channel index c + shift and whether it is inside [0, C) (always, if circular)."""
    idx = c + shift
    if CIRCULAR:
        idx = idx % C  # C's sign rule when compiled, numpy's when interpreted:
        idx = tl.where(idx < 0, idx + C, idx)  # both land in [0, C) after this
        valid = c < C
    else:
        valid = (c < C) & (idx >= 0) & (idx < C)
    return idx, valid


@triton.jit
def eca_gate_forward_kernel(
    sum_ptr, S, B, C, HW, w_ptr, bias_ptr, pooled_ptr, gate_ptr, b0,
    K: tl.constexpr, CIRCULAR: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_C: tl.constexpr, ACC: tl.constexpr,
):
    b = (b0 + tl.program_id(0)).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    p = reduce_partials(sum_ptr, S, B, C, b, c, cmask, False, ACC) / HW
    tl.store(pooled_ptr + b * C + c, p, mask=cmask)
    z = tl.zeros([BLOCK_C], dtype=ACC)
    for j in tl.static_range(K):
        idx, valid = _tap(c, j - (K - 1) // 2, C, CIRCULAR)
        pj = reduce_partials(sum_ptr, S, B, C, b, idx, valid, False, ACC) / HW
        z += tl.load(w_ptr + j).to(ACC) * pj
    if HAS_BIAS:
        z += tl.load(bias_ptr).to(ACC)
    tl.store(gate_ptr + b * C + c, sigmoid(z), mask=cmask)


@triton.jit
def _dz(dsum_ptr, gate_ptr, S, B, C, b, idx, valid, ACC: tl.constexpr):
    dg = reduce_partials(dsum_ptr, S, B, C, b, idx, valid, False, ACC)
    g = tl.load(gate_ptr + b * C + idx, mask=valid, other=0.0).to(ACC)
    return tl.where(valid, dg * g * (1.0 - g), 0.0)


@triton.jit
def eca_gate_backward_kernel(
    dsum_ptr, S, B, C, HW, w_ptr, gate_ptr, dz_ptr, mean_coef_ptr, b0,
    K: tl.constexpr, CIRCULAR: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr,
):
    b = (b0 + tl.program_id(0)).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    tl.store(dz_ptr + b * C + c, _dz(dsum_ptr, gate_ptr, S, B, C, b, c, cmask, ACC), mask=cmask)
    dp = tl.zeros([BLOCK_C], dtype=ACC)
    for j in tl.static_range(K):
        idx, valid = _tap(c, (K - 1) // 2 - j, C, CIRCULAR)
        dp += tl.load(w_ptr + j).to(ACC) * _dz(dsum_ptr, gate_ptr, S, B, C, b, idx, valid, ACC)
    tl.store(mean_coef_ptr + b * C + c, dp / HW, mask=cmask)


@triton.jit
def eca_weight_grad_kernel(
    dz_ptr, pooled_ptr, dw_ptr, dbias_ptr, B, C,
    K: tl.constexpr, CIRCULAR: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr,
):
    """Program j < K: dw[j]; program K (only launched with a bias): dbias."""
    j = tl.program_id(0)
    acc = tl.zeros([BLOCK_C], dtype=ACC)
    for b in range(0, B):
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            dz = tl.load(dz_ptr + b * C + c, mask=c < C, other=0.0).to(ACC)
            if j < K:
                idx, valid = _tap(c, j - (K - 1) // 2, C, CIRCULAR)
                dz *= tl.load(pooled_ptr + b * C + idx, mask=valid, other=0.0).to(ACC)
            acc += dz
    total = tl.sum(acc, axis=0)
    if j < K:
        tl.store(dw_ptr + j, total.to(dw_ptr.dtype.element_ty))
    else:
        tl.store(dbias_ptr, total.to(dbias_ptr.dtype.element_ty))


def eca_block_c(C: int) -> int:
    return min(next_pow2(C), 256)
