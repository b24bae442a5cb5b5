"""SimAM, forward and backward, one launch each: per (b, c) statistics over H*W, then the
elementwise pass, in the same program (batch 1: H*W split over programs, two launches).

    mu = mean_hw x,  var = sum_hw (x - mu)^2 / (HW - 1),  r = 1 / (4 (var + e_lambda))
    y = x * s,  s = sigmoid((x - mu)^2 r + 0.5)

Backward, with q = dy * x * s (1 - s) (the gradient of the energy) and two sums per (b, c),
S_d = sum q (x - mu)^2 and S_c = sum q (x - mu):

    dx = dy s + 2 (x - mu) (q r - 4 r^2 S_d / (HW - 1)) - 2 r S_c / HW

One program owns a [BLOCK_C, HW] slab (all of a sample's H*W for BLOCK_C channels), so each
pass reads its slab twice, the second time right after the first (from L2 while the slab of
the programs in flight fits it: NCHW at the ResNet stages). HW = 1: var = 0 / 0 = NaN, and y and
dx are NaN, as the reference's.

Statistics in the accumulation dtype (float32, float64 for float64 inputs), numerically stable:
shifted data, u = x - x[b, c, 0] (exact in float32 when x[b, c, 0] is within a factor 2 of x, as
with x + 1e4), then each [BLOCK_C, BLOCK_HW] tile's mean of u and sum of squared deviations (two
steps in registers), merged into the running ones with Chan, Golub and LeVeque's pairwise update.
x - mu is then u - mean(u), never x - (a rounded mu). No E[x^2] - E[x]^2, which loses every digit
when |mean| >> std. The saved per-(b, c) vector is ``centre`` = mean(u); the backward reloads the
shift x[b, c, 0].
"""
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import config
from .activations import sigmoid
from .layout import STREAM_WARPS, ChannelView, acc_dtype, acc_torch_dtype, cdiv, channel_view, next_pow2, tile_shape
from .launch import fast


@triton.jit
def _slab(C, n_cblocks, BLOCK_C: tl.constexpr):
    """(sample b, channels c [BLOCK_C], channel mask) of this program."""
    pid = tl.program_id(0)
    b = (pid // n_cblocks).to(tl.int64)
    c = (pid % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    return b, c.to(tl.int64), c < C


@triton.jit
def _shift(x_rows, cm):
    """x[b, c, 0] per channel: the shift of the statistics."""
    return tl.load(x_rows, mask=cm[:, None], other=0.0)


@triton.jit
def _energy_gate(v, shift, centre, r):
    """s = sigmoid((x - mu)^2 r + 0.5) and x - mu = (x - shift) - centre, for a tile v."""
    dev = (v - shift) - centre[:, None]
    return sigmoid(dev * dev * r[:, None] + 0.5), dev


@triton.jit
def _merge(mean, m2, n_seen, t_mean, t_m2, n_new):
    """Chan, Golub and LeVeque: (mean, M2) of n_seen values merged with those of n_new more."""
    n_all = n_seen + n_new
    delta = t_mean - mean
    return mean + delta * (n_new / n_all), m2 + t_m2 + delta * delta * (n_seen * n_new / n_all)


@triton.jit
def _count(n, BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    """n (an int, a loop index) as a [BLOCK_C] vector of the accumulation dtype."""
    return (n + tl.zeros([BLOCK_C], dtype=tl.int32)).to(ACC)


@triton.jit
def _range_statistics(x_rows, sxhw, shift, cm, hw_start, hw_end,
                      BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr):
    """(mean, M2) per channel of u = x - shift over positions [hw_start, hw_end), tile by tile."""
    mean = tl.zeros([BLOCK_C], dtype=ACC)
    m2 = tl.zeros([BLOCK_C], dtype=ACC)
    for hw0 in range(hw_start, hw_end, BLOCK_HW):
        hw = hw0 + tl.arange(0, BLOCK_HW)
        m = cm[:, None] & (hw < hw_end)[None, :]
        u = tl.load(x_rows + hw.to(tl.int64)[None, :] * sxhw, mask=m, other=0.0,
                    eviction_policy="evict_last").to(ACC) - shift
        u = tl.where(m, u, 0.0)
        n_tile = tl.minimum(_count(hw_end - hw0, BLOCK_C, ACC), BLOCK_HW)
        t_mean = tl.sum(u, axis=1) / n_tile
        t_dev = tl.where(m, u - t_mean[:, None], 0.0)
        mean, m2 = _merge(mean, m2, _count(hw0 - hw_start, BLOCK_C, ACC), t_mean, tl.sum(t_dev * t_dev, axis=1),
                          n_tile)     # every earlier tile of the range was full
    return mean, m2


@triton.jit
def _grad_sums(x_rows, sxhw, dy_rows, sdhw, shift, centre, r, cm, hw_start, hw_end,
               BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr):
    """(sum q (x - mu)^2, sum q (x - mu)) per channel over [hw_start, hw_end)."""
    s_d = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    s_c = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    for hw0 in range(hw_start, hw_end, BLOCK_HW):
        hw = (hw0 + tl.arange(0, BLOCK_HW)).to(tl.int64)[None, :]
        m = cm[:, None] & (hw < hw_end)
        v = tl.load(x_rows + hw * sxhw, mask=m, other=0.0, eviction_policy="evict_last").to(ACC)
        g = tl.load(dy_rows + hw * sdhw, mask=m, other=0.0, eviction_policy="evict_last").to(ACC)
        s, dev = _energy_gate(v, shift, centre, r)
        q = g * v * s * (1.0 - s)
        s_d += q * dev * dev
        s_c += q * dev
    return tl.sum(s_d, axis=1), tl.sum(s_c, axis=1)


@triton.jit
def _store_partials(ptr_a, ptr_b, va, vb, B, b, C, c, cm):
    """This split's two per-channel partials into [S, B, C] buffers."""
    part = (tl.program_id(1) * B + b) * C + c
    tl.store(ptr_a + part, va, mask=cm)
    tl.store(ptr_b + part, vb, mask=cm)


@triton.jit
def _split_range(HW, hw_per_split):
    hw_start = tl.program_id(1) * hw_per_split
    return hw_start, tl.minimum(hw_start + hw_per_split, HW)


@triton.jit
def simam_statistics_kernel(
    x_ptr, sxb, sxc, sxhw, part_mean_ptr, part_m2_ptr,
    B, C, HW, hw_per_split, n_cblocks,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr,
):
    """H*W split over programs (grid axis 1): each split's (mean, M2) of x - x[b, c, 0], [S, B, C]."""
    b, c, cm = _slab(C, n_cblocks, BLOCK_C)
    x_rows = x_ptr + b * sxb + c[:, None] * sxc
    hw_start, hw_end = _split_range(HW, hw_per_split)
    mean, m2 = _range_statistics(x_rows, sxhw, _shift(x_rows, cm).to(ACC), cm, hw_start, hw_end,
                                 BLOCK_C, BLOCK_HW, ACC)
    _store_partials(part_mean_ptr, part_m2_ptr, mean, m2, B, b, C, c, cm)


@triton.jit
def simam_forward_kernel(
    x_ptr, sxb, sxc, sxhw,
    y_ptr, syb, syc, syhw,
    centre_ptr, rinv_ptr, part_mean_ptr, part_m2_ptr,
    B, C, HW, hw_per_split, n_splits, n_cblocks,
    LAMBDA: tl.constexpr, SPLIT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ACC: tl.constexpr,
):
    """Without SPLIT: the whole block, one program per (sample, channel block). With SPLIT (after
    simam_statistics_kernel): the partials merged (each program the same way, in split order),
    split 0 stores centre and rinv, every program writes y over its split."""
    b, c, cm = _slab(C, n_cblocks, BLOCK_C)
    x_rows = x_ptr + b * sxb + c[:, None] * sxc
    shift = _shift(x_rows, cm).to(ACC)
    if SPLIT:
        hw_start, hw_end = _split_range(HW, hw_per_split)
        mean = tl.zeros([BLOCK_C], dtype=ACC)
        m2 = tl.zeros([BLOCK_C], dtype=ACC)
        for split in range(0, n_splits):
            part = (split * B + b) * C + c
            n_new = tl.minimum(_count(HW - split * hw_per_split, BLOCK_C, ACC), _count(hw_per_split, BLOCK_C, ACC))
            mean, m2 = _merge(mean, m2, _count(split * hw_per_split, BLOCK_C, ACC),
                              tl.load(part_mean_ptr + part, mask=cm, other=0.0),
                              tl.load(part_m2_ptr + part, mask=cm, other=0.0), n_new)
    else:
        hw_start, hw_end = 0, HW
        mean, m2 = _range_statistics(x_rows, sxhw, shift, cm, 0, HW, BLOCK_C, BLOCK_HW, ACC)
    r = 1.0 / (4.0 * (m2 / (HW - 1.0) + LAMBDA))
    if tl.program_id(1) == 0:
        tl.store(centre_ptr + b * C + c, mean, mask=cm)
        tl.store(rinv_ptr + b * C + c, r, mask=cm)
    y_rows = y_ptr + b * syb + c[:, None] * syc
    for hw0 in range(hw_start, hw_end, BLOCK_HW):
        hw = (hw0 + tl.arange(0, BLOCK_HW)).to(tl.int64)[None, :]
        m = cm[:, None] & (hw < hw_end)
        v = tl.load(x_rows + hw * sxhw, mask=m, other=0.0, eviction_policy="evict_first").to(ACC)
        s, _ = _energy_gate(v, shift, mean, r)
        tl.store(y_rows + hw * syhw, (v * s).to(y_ptr.dtype.element_ty), mask=m, eviction_policy="evict_first")


@triton.jit
def simam_grad_sums_kernel(
    dy_ptr, sdb, sdc, sdhw,
    x_ptr, sxb, sxc, sxhw,
    centre_ptr, rinv_ptr, part_d_ptr, part_c_ptr,
    B, C, HW, hw_per_split, n_cblocks,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr,
):
    """H*W split over programs: each split's two sums of the backward, [S, B, C]."""
    b, c, cm = _slab(C, n_cblocks, BLOCK_C)
    x_rows = x_ptr + b * sxb + c[:, None] * sxc
    centre = tl.load(centre_ptr + b * C + c, mask=cm, other=0.0).to(ACC)
    r = tl.load(rinv_ptr + b * C + c, mask=cm, other=0.0).to(ACC)
    hw_start, hw_end = _split_range(HW, hw_per_split)
    s_d, s_c = _grad_sums(x_rows, sxhw, dy_ptr + b * sdb + c[:, None] * sdc, sdhw, _shift(x_rows, cm).to(ACC),
                          centre, r, cm, hw_start, hw_end, BLOCK_C, BLOCK_HW, ACC)
    _store_partials(part_d_ptr, part_c_ptr, s_d, s_c, B, b, C, c, cm)


@triton.jit
def simam_backward_kernel(
    dy_ptr, sdb, sdc, sdhw,
    x_ptr, sxb, sxc, sxhw,
    dx_ptr, sgb, sgc, sghw,
    centre_ptr, rinv_ptr, part_d_ptr, part_c_ptr,
    B, C, HW, hw_per_split, n_splits, n_cblocks,
    SPLIT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr,
):
    """Without SPLIT: the whole backward per (sample, channel block); with SPLIT (after
    simam_grad_sums_kernel): the partial sums added in split order, dx written over its split."""
    b, c, cm = _slab(C, n_cblocks, BLOCK_C)
    x_rows = x_ptr + b * sxb + c[:, None] * sxc
    dy_rows = dy_ptr + b * sdb + c[:, None] * sdc
    shift = _shift(x_rows, cm).to(ACC)
    centre = tl.load(centre_ptr + b * C + c, mask=cm, other=0.0).to(ACC)
    r = tl.load(rinv_ptr + b * C + c, mask=cm, other=0.0).to(ACC)
    if SPLIT:
        hw_start, hw_end = _split_range(HW, hw_per_split)
        s_d = tl.zeros([BLOCK_C], dtype=ACC)
        s_c = tl.zeros([BLOCK_C], dtype=ACC)
        for split in range(0, n_splits):
            part = (split * B + b) * C + c
            s_d += tl.load(part_d_ptr + part, mask=cm, other=0.0)
            s_c += tl.load(part_c_ptr + part, mask=cm, other=0.0)
    else:
        hw_start, hw_end = 0, HW
        s_d, s_c = _grad_sums(x_rows, sxhw, dy_rows, sdhw, shift, centre, r, cm, 0, HW, BLOCK_C, BLOCK_HW, ACC)
    k_var = 4.0 * r * r * s_d / (HW - 1.0)
    k_mean = 2.0 * r * s_c / HW
    dx_rows = dx_ptr + b * sgb + c[:, None] * sgc
    for hw0 in range(hw_start, hw_end, BLOCK_HW):
        hw = (hw0 + tl.arange(0, BLOCK_HW)).to(tl.int64)[None, :]
        m = cm[:, None] & (hw < hw_end)
        v = tl.load(x_rows + hw * sxhw, mask=m, other=0.0, eviction_policy="evict_first").to(ACC)
        g = tl.load(dy_rows + hw * sdhw, mask=m, other=0.0, eviction_policy="evict_first").to(ACC)
        s, dev = _energy_gate(v, shift, centre, r)
        q = g * v * s * (1.0 - s)
        dx = g * s + 2.0 * dev * (q * r[:, None] - k_var[:, None]) - k_mean[:, None]
        tl.store(dx_rows + hw * sghw, dx.to(dx_ptr.dtype.element_ty), mask=m, eviction_policy="evict_first")


class SimAMPlan(NamedTuple):
    block_c: int
    block_hw: int
    n_cblocks: int
    n_splits: int       # 1: one launch; more: partials, then the merge and output launch
    hw_per_split: int


def plan_simam(xv: ChannelView, B: int, C: int, HW: int, backward: bool = False) -> SimAMPlan:
    """About 2048-element tiles along the contiguous axis (in channels_last 32 channels wide, not
    128: four times the programs, B = 64 at the first ResNet stage gives 512); H*W split over
    programs (two launches) only when B x channel blocks is under half the device's target program
    count (batch 1), into at most one split per tile. config.one_launch (config.one_launch_backward
    for the backward) forces one launch (True) or two splits at least (False; the cost model pins a
    real case's plan on its scaled copy so)."""
    block_c, block_hw = tile_shape(xv, C, HW)
    if block_c > 32 and abs(xv.sc) == 1:
        block_c, block_hw = 32, min(next_pow2(HW), 64)
    n_cblocks = cdiv(C, block_c)
    target = config.device_target_programs(xv.tensor.device)
    forced = config.one_launch_backward if backward and config.one_launch_backward is not None else config.one_launch
    if forced is False and HW > 1:
        return SimAMPlan(block_c, block_hw, n_cblocks, 2, cdiv(HW, 2))
    splits = 1
    if 2 * B * n_cblocks < target and forced is None:
        splits = min(cdiv(target, B * n_cblocks), cdiv(HW, block_hw))
    hw_per_split = cdiv(cdiv(HW, splits), block_hw) * block_hw
    return SimAMPlan(block_c, block_hw, n_cblocks, cdiv(HW, hw_per_split), hw_per_split)


def simam_forward(x: torch.Tensor, e_lambda: float):
    """x [B, C, H, W] -> (y like x in its memory format, centre [B, C], rinv [B, C]) with
    centre = mean_hw(x - x[:, :, 0, 0]) and rinv = 1 / (4 (var + e_lambda)) in the accumulation
    dtype, for the backward."""
    B, C, H, W = x.shape
    xv = channel_view(x)
    y = config.new_like(xv.tensor)
    yv = channel_view(y)
    dt = acc_torch_dtype(x.dtype)
    centre = config.new_buffer((B, C), dt, x.device)
    rinv = config.new_buffer((B, C), dt, x.device)
    plan = plan_simam(xv, B, C, H * W)
    split = plan.n_splits > 1
    parts = [config.new_buffer((plan.n_splits, B, C), dt, x.device) for _ in range(2)] if split else [centre, rinv]
    grid = (B * plan.n_cblocks, plan.n_splits)
    meta = dict(BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw, ACC=acc_dtype(x.dtype), num_warps=STREAM_WARPS)
    if split:
        fast(simam_statistics_kernel)[grid](xv.tensor, xv.sb, xv.sc, xv.shw, *parts, B, C, H * W, plan.hw_per_split,
                                      plan.n_cblocks, **meta)
    # e_lambda a constexpr: a float argument would reach the float64 variant rounded to float32
    fast(simam_forward_kernel)[grid](
        xv.tensor, xv.sb, xv.sc, xv.shw, y, yv.sb, yv.sc, yv.shw, centre, rinv, *parts,
        B, C, H * W, plan.hw_per_split, plan.n_splits, plan.n_cblocks, LAMBDA=e_lambda, SPLIT=split, **meta)
    return y, centre, rinv


def simam_backward(dy: torch.Tensor, x: torch.Tensor, centre: torch.Tensor, rinv: torch.Tensor) -> torch.Tensor:
    """dx of simam_forward from dy and the saved x, centre, rinv."""
    B, C, H, W = x.shape
    xv, dyv = channel_view(x), channel_view(dy)
    dx = config.new_like(xv.tensor)
    dxv = channel_view(dx)
    plan = plan_simam(xv, B, C, H * W, backward=True)
    split = plan.n_splits > 1
    parts = [config.new_buffer((plan.n_splits, B, C), centre.dtype, x.device) for _ in range(2)] if split \
        else [centre, rinv]
    grid = (B * plan.n_cblocks, plan.n_splits)
    meta = dict(BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw, ACC=acc_dtype(x.dtype), num_warps=STREAM_WARPS)
    if split:
        fast(simam_grad_sums_kernel)[grid](dyv.tensor, dyv.sb, dyv.sc, dyv.shw, xv.tensor, xv.sb, xv.sc, xv.shw, centre,
                                     rinv, *parts, B, C, H * W, plan.hw_per_split, plan.n_cblocks, **meta)
    fast(simam_backward_kernel)[grid](
        dyv.tensor, dyv.sb, dyv.sc, dyv.shw, xv.tensor, xv.sb, xv.sc, xv.shw, dx, dxv.sb, dxv.sc, dxv.shw,
        centre, rinv, *parts, B, C, H * W, plan.hw_per_split, plan.n_splits, plan.n_cblocks, SPLIT=split, **meta)
    return dx
