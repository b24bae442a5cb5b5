"""Per-pixel reductions over channels of x1 = x * ca[b, c] (CBAM's spatial maps), without
writing x1:

    forward:   mean_c(x1), max_c(x1)                    -> maps [B, 2, HW]
    backward:  sum_c(dy * x1), #(x1 == max_c(x1))       -> [B, HW] each

One program reduces all channels of a block of pixels of one sample. x1 is recomputed
the same way (float32 / float64 product) in both passes, so the tie test is exact.
"""
from typing import NamedTuple

import triton
import triton.language as tl

from . import config
from .layout import ChannelView, STREAM_WARPS, acc_dtype, cdiv, next_pow2, tile_shape
from .nan_math import max_along, maximum
from .launch import fast


@triton.jit
def spatial_pool_kernel(
    x_ptr, sxb, sxc, sxhw,
    dy_ptr, sdb, sdc, sdhw,
    ca_ptr, ref_ptr, ref_sb,
    sum_ptr, max_ptr, cnt_ptr, out_sb,
    b0, C, HW, n_hwblocks,
    PRODUCT: tl.constexpr, WITH_MAX: tl.constexpr, COUNT_TIES: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr,
):
    pid = tl.program_id(0)
    b = (b0 + pid // n_hwblocks).to(tl.int64)
    hw = (pid % n_hwblocks) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    hwmask = hw < HW
    hw64 = hw.to(tl.int64)[None, :]
    if COUNT_TIES:
        ref = tl.load(ref_ptr + b * ref_sb + hw, mask=hwmask, other=0.0).to(ACC)
    acc = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    mx = tl.full([BLOCK_C, BLOCK_HW], float("-inf"), dtype=ACC)
    cnt = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        m = (c < C)[:, None] & hwmask[None, :]
        c64 = c.to(tl.int64)[:, None]
        g = tl.load(ca_ptr + b * C + c, mask=c < C, other=0.0).to(ACC)
        v = tl.load(x_ptr + b * sxb + c64 * sxc + hw64 * sxhw, mask=m, other=0.0,
                    eviction_policy="evict_last").to(ACC) * g[:, None]
        if PRODUCT:
            d = tl.load(dy_ptr + b * sdb + c64 * sdc + hw64 * sdhw, mask=m, other=0.0,
                        eviction_policy="evict_last").to(ACC)
            acc += d * v
        else:
            acc += v
        if WITH_MAX:
            mx = maximum(mx, tl.where(m, v, float("-inf")))
        if COUNT_TIES:
            cnt += tl.where(m & (v == ref[None, :]), 1.0, 0.0)
    total = tl.sum(acc, axis=0)
    if not PRODUCT:
        total = total / C
    tl.store(sum_ptr + b * out_sb + hw, total, mask=hwmask)
    if WITH_MAX:
        tl.store(max_ptr + b * out_sb + hw, max_along(mx, 0), mask=hwmask)
    if COUNT_TIES:
        tl.store(cnt_ptr + b * out_sb + hw, tl.sum(cnt, axis=0), mask=hwmask)


class SpatialPlan(NamedTuple):
    block_c: int
    block_hw: int
    n_hwblocks: int


def plan_spatial(view: ChannelView, chunk: int, C: int, HW: int) -> SpatialPlan:
    """Tile for per-pixel channel reductions; narrows the pixel block while there are too
    few programs to fill the device (small H*W or batch)."""
    block_c, block_hw = tile_shape(view, C, HW)
    target = config.device_target_programs(view.tensor.device)
    while chunk * cdiv(HW, block_hw) < target and block_hw > 16:
        block_hw //= 2
        block_c = min(block_c * 2, next_pow2(C))
    return SpatialPlan(block_c, block_hw, cdiv(HW, block_hw))


def spatial_pool(x: ChannelView, ca, plan: SpatialPlan, b0: int, nb: int, out_sum, out_max=None,
                 out_sb: int = 0, dy: ChannelView | None = None, out_cnt=None, ref_max=None,
                 ref_sb: int = 0) -> None:
    """For samples [b0, b0 + nb): mean_c (or sum_c(dy * x1) with dy) into out_sum, max_c
    into out_max, ties with ref_max into out_cnt; outputs indexed b * out_sb + hw."""
    _, C, H, W = x.tensor.shape
    d = dy if dy is not None else x
    fast(spatial_pool_kernel)[(nb * plan.n_hwblocks,)](
        x.tensor, x.sb, x.sc, x.shw, d.tensor, d.sb, d.sc, d.shw,
        ca, ref_max if ref_max is not None else ca, ref_sb,
        out_sum, out_max if out_max is not None else out_sum,
        out_cnt if out_cnt is not None else out_sum, out_sb,
        b0, C, H * W, plan.n_hwblocks,
        PRODUCT=dy is not None, WITH_MAX=out_max is not None, COUNT_TIES=out_cnt is not None,
        BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw, ACC=acc_dtype(x.tensor.dtype), num_warps=STREAM_WARPS,
    )
