"""Per-(b, c) reductions over H*W: sum(x) [+ max(x)], or sum(dy * x) [+ #(x == max)].

One program reduces a [BLOCK_C, hw_per_split] slab of one sample; H*W is split across
``n_splits`` programs (at most MAX_SPLITS) when B * C alone gives too few programs to fill the
GPU. Each split writes its own partial (no atomics), the gate kernels add the partials in a
fixed order, so results are deterministic.

Partials are [n_splits, B, C] in the accumulation dtype.
"""
import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import config
from .layout import ChannelView, STREAM_WARPS, acc_dtype, acc_torch_dtype, cdiv, tile_shape
from .nan_math import max_along, maximum
from .launch import fast


@triton.jit
def pool_slab(b0, C, HW, hw_per_split, n_cblocks, BLOCK_C: tl.constexpr):
    """This program's slab of a [B, C, HW] reduction: (sample b, channels c, split index,
    hw_start, hw_end); grid = (chunk samples * channel blocks, splits)."""
    pid = tl.program_id(0)
    split = tl.program_id(1)
    b = (b0 + pid // n_cblocks).to(tl.int64)
    c = (pid % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    hw_start = split * hw_per_split
    return b, c, split, hw_start, tl.minimum(hw_start + hw_per_split, HW)


@triton.jit
def pool_tile(x_ptr, sxb, sxc, sxhw, dy_ptr, sdb, sdc, sdhw, ref_ptr, sum_ptr, max_ptr, cnt_ptr,
              b0, row0, ROWS, C, HW, hw_per_split, n_cblocks,
              PRODUCT: tl.constexpr, WITH_MAX: tl.constexpr, COUNT_TIES: tl.constexpr,
              BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr):
    """This program's slab (pool_slab) reduced and stored as its [S, ROWS, C] partials; returns
    the sample b."""
    b, c, split, hw_start, hw_end = pool_slab(b0, C, HW, hw_per_split, n_cblocks, BLOCK_C)
    cmask = c < C
    c64 = c.to(tl.int64)
    x_rows = x_ptr + b * sxb + c64[:, None] * sxc
    dy_rows = dy_ptr + b * sdb + c64[:, None] * sdc
    row = row0 + b  # this sample's row in the [S, ROWS, C] partials (and in ref)
    if COUNT_TIES:
        ref = tl.load(ref_ptr + row * C + c64, mask=cmask, other=0.0).to(ACC)

    acc = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    mx = tl.full([BLOCK_C, BLOCK_HW], float("-inf"), dtype=ACC)
    cnt = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    for hw0 in range(hw_start, hw_end, BLOCK_HW):
        hw = hw0 + tl.arange(0, BLOCK_HW)
        m = cmask[:, None] & (hw < hw_end)[None, :]
        hw64 = hw.to(tl.int64)[None, :]
        v = tl.load(x_rows + hw64 * sxhw, mask=m, other=0.0,
                    eviction_policy="evict_first" if PRODUCT and not COUNT_TIES else "evict_last").to(ACC)
        if PRODUCT:
            d = tl.load(dy_rows + hw64 * sdhw, mask=m, other=0.0, eviction_policy="evict_last").to(ACC)
            acc += v * d
        else:
            acc += v
        if WITH_MAX:
            mx = maximum(mx, tl.where(m, v, float("-inf")))
        if COUNT_TIES:
            cnt += tl.where(m & (v == ref[:, None]), 1.0, 0.0)

    out = (split * ROWS + row) * C + c64
    tl.store(sum_ptr + out, tl.sum(acc, axis=1), mask=cmask)
    if WITH_MAX:
        tl.store(max_ptr + out, max_along(mx, 1), mask=cmask)
    if COUNT_TIES:
        tl.store(cnt_ptr + out, tl.sum(cnt, axis=1), mask=cmask)
    return b


@triton.jit
def channel_pool_kernel(
    x_ptr, sxb, sxc, sxhw,
    dy_ptr, sdb, sdc, sdhw,
    ref_ptr,
    sum_ptr, max_ptr, cnt_ptr,
    b0, row0, ROWS, C, HW, hw_per_split, n_cblocks,
    PRODUCT: tl.constexpr, WITH_MAX: tl.constexpr, COUNT_TIES: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr,
):
    pool_tile(x_ptr, sxb, sxc, sxhw, dy_ptr, sdb, sdc, sdhw, ref_ptr, sum_ptr, max_ptr, cnt_ptr,
              b0, row0, ROWS, C, HW, hw_per_split, n_cblocks,
              PRODUCT, WITH_MAX, COUNT_TIES, BLOCK_C, BLOCK_HW, ACC)


class PoolPlan(NamedTuple):
    block_c: int
    block_hw: int
    n_cblocks: int
    n_splits: int
    hw_per_split: int


#: Partials per (b, c) at most. Every gate reads a sample's partials one split after another (SE's
#: in the last program of the pool launch), and filling 4 programs per SM split a batch of one at
#: 56x56 196 ways (4 KB per program; 200 KB of partials, 1/8 of x in bf16, for the gate to read).
#: The cost model (H100 profile, batch 1, every block that pools through this plan) put the cap at
#: 32: at 8 the few programs (16 at 1x256x56x56) each stream too much for one SM and the modeled
#: time rose up to 11% (PSA 1x256x56x56 fwd+bwd 55.1 -> 61.1 us); at 32 no case is slower by more
#: than 0.7 us, SK 1x256x56x56 fwd+bwd 45.3 -> 44.4, ECA's epilogue backward 30.0 -> 23.5, and the
#: partials the gates read shrink 6x.
MAX_SPLITS = 32


def plan_pool(view: ChannelView, chunk: int, C: int, HW: int, target: int | None = None) -> PoolPlan:
    """Tile and H*W split for reducing ``chunk`` samples at a time in about ``target`` programs
    (default: the device's target)."""
    block_c, block_hw = tile_shape(view, C, HW)
    n_cblocks = cdiv(C, block_c)
    target = target or config.device_target_programs(view.tensor.device)
    max_splits = min(cdiv(HW, block_hw), MAX_SPLITS)
    splits = min(max(math.ceil(target / (chunk * n_cblocks)), 1), max_splits)
    hw_per_split = cdiv(cdiv(HW, splits), block_hw) * block_hw
    return PoolPlan(block_c, block_hw, n_cblocks, cdiv(HW, hw_per_split), hw_per_split)


class PoolPartials(NamedTuple):
    sums: torch.Tensor          # [S, B, C]
    maxs: torch.Tensor | None   # [S, B, C] when pooling the maximum too
    counts: torch.Tensor | None  # [S, B, C] ties with the maximum (backward)


def new_partials(plan: PoolPlan, B: int, C: int, x: torch.Tensor, with_max: bool,
                 with_counts: bool = False) -> PoolPartials:
    shape, dt = (plan.n_splits, B, C), acc_torch_dtype(x.dtype)
    return PoolPartials(
        config.new_buffer(shape, dt, x.device),
        config.new_buffer(shape, dt, x.device) if with_max else None,
        config.new_buffer(shape, dt, x.device) if with_counts else None,
    )


def channel_pool(view: ChannelView, plan: PoolPlan, parts: PoolPartials, b0: int, nb: int,
                 dy: ChannelView | None = None, ref_max: torch.Tensor | None = None,
                 row0: int = 0) -> None:
    """Fill ``parts`` for samples [b0, b0 + nb): sums of x (or of dy * x when dy is given),
    maxima of x when ``parts.maxs`` is set, and ties with ``ref_max`` [rows, C] when set.
    Sample b lands in partial row row0 + b (several tensors can share one buffer)."""
    B, C, H, W = view.tensor.shape
    d = dy if dy is not None else view
    grid = (nb * plan.n_cblocks, plan.n_splits)
    fast(channel_pool_kernel)[grid](
        view.tensor, view.sb, view.sc, view.shw,
        d.tensor, d.sb, d.sc, d.shw,
        ref_max if ref_max is not None else parts.sums,
        parts.sums,
        parts.maxs if parts.maxs is not None else parts.sums,
        parts.counts if parts.counts is not None else parts.sums,
        b0, row0, parts.sums.shape[1], C, H * W, plan.hw_per_split, plan.n_cblocks,
        PRODUCT=dy is not None, WITH_MAX=parts.maxs is not None,
        COUNT_TIES=parts.counts is not None,
        BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw, ACC=acc_dtype(view.tensor.dtype),
        num_warps=STREAM_WARPS,
    )


@triton.jit
def reduce_partials(ptr, S, B, C, b, c, cmask, IS_MAX: tl.constexpr, ACC: tl.constexpr):
    """Combine the [S, B, C] partials of sample b at channels c (sum, or max if IS_MAX). Loaded
    from L2 (.cg), never from this SM's L1: the last program of a sample to arrive reads partials
    that other programs of the same launch wrote (se_pool_gate_kernel)."""
    if IS_MAX:
        r = tl.full(c.shape, float("-inf"), dtype=ACC)
    else:
        r = tl.zeros(c.shape, dtype=ACC)
    for s in range(0, S):
        v = tl.load(ptr + (s * B + b) * C + c, mask=cmask, other=0.0, cache_modifier=".cg").to(ACC)
        if IS_MAX:
            r = maximum(r, v)
        else:
            r += v
    return r
