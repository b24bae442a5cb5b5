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
partials instead of being exchanged between programs. The weight gradient: one program per
(sample tile, channel tile, tap), rows of partial sums added in a fixed order by the last program.
"""
import triton
import triton.language as tl

from . import config
from .activations import sigmoid
from .arrival import arrival_counters, last_to_arrive
from .channel_pool import reduce_partials
from .launch import fast
from .layout import cdiv, next_pow2


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
    dz_ptr, pooled_ptr, dw_ptr, dbias_ptr, part_ptr, count_ptr, B, C,
    K: tl.constexpr, CIRCULAR: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr,
):
    """Grid (sample tiles, channel tiles, K (+ 1 with a bias)): program (., ., j) stores its tile's
    sum of dz * p shifted by tap j (j = K: of dz, the bias gradient) in column j of the tile's row of
    the [tiles, K + 1] partials; the last program to arrive (kernels.arrival) adds the rows in tile
    order -> dw [K], dbias."""
    b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)[:, None]
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
    j = tl.program_id(2)
    bmask = b < B
    dz = tl.load(dz_ptr + b * C + c, mask=bmask & (c < C), other=0.0).to(ACC)
    if j < K:
        idx, valid = _tap(c, j - (K - 1) // 2, C, CIRCULAR)
        dz *= tl.load(pooled_ptr + b * C + idx, mask=bmask & valid, other=0.0).to(ACC)
    tile = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
    tl.store(part_ptr + tile * (K + 1) + j, tl.sum(tl.sum(dz, axis=1), axis=0))
    tiles = tl.num_programs(0) * tl.num_programs(1)
    if last_to_arrive(count_ptr, 0, tiles * tl.num_programs(2)):
        k = tl.arange(0, BLOCK_K)[None, :]
        total = tl.zeros([BLOCK_T, BLOCK_K], dtype=ACC)
        for t0 in range(0, tiles, BLOCK_T):
            t = t0 + tl.arange(0, BLOCK_T)[:, None]
            total += tl.load(part_ptr + t * (K + 1) + k, mask=(t < tiles) & (k < tl.num_programs(2)), other=0.0,
                             cache_modifier=".cg")
        total = tl.sum(total, axis=0)
        k = tl.arange(0, BLOCK_K)
        tl.store(dw_ptr + k, total.to(dw_ptr.dtype.element_ty), mask=k < K)
        if HAS_BIAS:
            tl.store(dbias_ptr + (k - K), total.to(dbias_ptr.dtype.element_ty), mask=k == K)


#: Values of a weight-gradient tile (16 per thread on 4 warps), and rows of partials the last
#: program adds per step.
WEIGHT_GRAD_TILE = 2048
WEIGHT_GRAD_ROWS = 256


def eca_weight_grad(dz, pooled, dw, db, K: int, circular: bool, acc) -> None:
    """dw [K] (and db [1] unless None) from dz and pooled [B, C]: one launch, one program per tap
    and tile of up to 128 channels x as many samples as fill WEIGHT_GRAD_TILE."""
    B, C = dz.shape
    block_c = min(next_pow2(C), 128)
    block_b = min(next_pow2(B), max(1, WEIGHT_GRAD_TILE // block_c))
    grid = (cdiv(B, block_b), cdiv(C, block_c))
    tiles = grid[0] * grid[1]
    fast(eca_weight_grad_kernel)[(*grid, K + int(db is not None))](
        dz, pooled, dw, db if db is not None else dw, config.new_buffer((tiles, K + 1), dz.dtype, dz.device),
        arrival_counters(dz.device, 1), B, C,
        K=K, CIRCULAR=circular, HAS_BIAS=db is not None, BLOCK_B=block_b, BLOCK_C=block_c,
        BLOCK_T=min(next_pow2(tiles), WEIGHT_GRAD_ROWS), BLOCK_K=next_pow2(K + 1), ACC=acc, num_warps=4,
    )


def eca_block_c(C: int) -> int:
    return min(next_pow2(C), 256)
