"""Streaming passes over P same-shape path tensors x_p [B, C, H, W] (SK's branches), which
stay separate tensors (no stacked copy):

    path_pool            sums[s, b, c]      = sum_p sum_{hw in split s} x_p[b, c, hw]
    path_pool (dy given) sums[s, b*P+p, c]  = sum_{hw in split s} dy[b, c, hw] * x_p[b, c, hw]
    path_combine         y[b, c, hw]        = sum_p att[b, p*C + c] * x_p[b, c, hw]
    path_combine_backward dx_p[b, c, hw]    = dy[b, c, hw] * att[b, p*C + c] + coef[b, c]

A kernel takes up to MAX_PATHS path pointers (x0..x3) sharing one set of strides; more
paths run as groups of MAX_PATHS (pool partials of a group land in their own split rows,
a later combine group adds onto y). The pooling slab and the scale tile are the same as
channel_pool's and channel_scale's. In the product pool, one program walks its slab of dy
once per path: the repeats hit L2 (the slab is a few KiB per program), so HBM sees dy once.
"""
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .channel_pool import PoolPlan, plan_pool, pool_slab
from .channel_scale import scale_grid, scale_tile
from .layout import ChannelView, STREAM_WARPS, acc_dtype, acc_torch_dtype, channel_view, suggested_memory_format
from .launch import fast

MAX_PATHS = 4


@triton.jit
def _path(x0, x1, x2, x3, p: tl.constexpr):
    """Pointer of path p (p is a compile-time constant)."""
    ptr = x0
    if p == 1:
        ptr = x1
    if p == 2:
        ptr = x2
    if p == 3:
        ptr = x3
    return ptr


@triton.jit
def path_pool_kernel(
    x0, x1, x2, x3, sxb, sxc, sxhw,
    dy_ptr, sdb, sdc, sdhw,
    sum_ptr, split0, ROWS, row_stride, row0,
    C, HW, hw_per_split, n_cblocks,
    P: tl.constexpr, PRODUCT: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr,
):
    b, c, split, hw_start, hw_end = pool_slab(0, C, HW, hw_per_split, n_cblocks, BLOCK_C)
    cmask = c < C
    c64 = c.to(tl.int64)
    x_off = b * sxb + c64[:, None] * sxc
    dy_rows = dy_ptr + b * sdb + c64[:, None] * sdc
    row = b * row_stride + row0  # partial row of this sample (of path row0 + p with PRODUCT)
    if PRODUCT:
        for p in tl.static_range(P):
            xp = _path(x0, x1, x2, x3, p) + x_off
            acc = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
            for hw0 in range(hw_start, hw_end, BLOCK_HW):
                hw = hw0 + tl.arange(0, BLOCK_HW)
                m = cmask[:, None] & (hw < hw_end)[None, :]
                hw64 = hw.to(tl.int64)[None, :]
                d = tl.load(dy_rows + hw64 * sdhw, mask=m, other=0.0, eviction_policy="evict_last").to(ACC)
                acc += d * tl.load(xp + hw64 * sxhw, mask=m, other=0.0, eviction_policy="evict_first").to(ACC)
            tl.store(sum_ptr + ((split0 + split) * ROWS + row + p) * C + c64, tl.sum(acc, axis=1), mask=cmask)
    else:
        acc = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
        for hw0 in range(hw_start, hw_end, BLOCK_HW):
            hw = hw0 + tl.arange(0, BLOCK_HW)
            m = cmask[:, None] & (hw < hw_end)[None, :]
            hw64 = hw.to(tl.int64)[None, :]
            for p in tl.static_range(P):
                acc += tl.load(_path(x0, x1, x2, x3, p) + x_off + hw64 * sxhw, mask=m, other=0.0,
                               eviction_policy="evict_last").to(ACC)
        tl.store(sum_ptr + ((split0 + split) * ROWS + row) * C + c64, tl.sum(acc, axis=1), mask=cmask)


@triton.jit
def path_combine_kernel(
    x0, x1, x2, x3, sxb, sxc, sxhw,
    y_ptr, syb, syc, syhw,
    att_ptr, p0, P_ALL, C, HW, n_hwblocks, n_cblocks,
    P: tl.constexpr, ACCUMULATE: tl.constexpr, LAST: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr,
):
    b, c, hw, mask = scale_tile(tl.program_id(0), 0, C, HW, n_hwblocks, n_cblocks, BLOCK_C, BLOCK_HW)
    cm = c < C
    x_off = b * sxb + c[:, None] * sxc + hw[None, :] * sxhw
    y_at = y_ptr + b * syb + c[:, None] * syc + hw[None, :] * syhw
    att_row = att_ptr + (b * P_ALL + p0) * C + c
    y = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    for p in tl.static_range(P):
        a = tl.load(att_row + p * C, mask=cm, other=0.0).to(ACC)
        y += tl.load(_path(x0, x1, x2, x3, p) + x_off, mask=mask, other=0.0,
                     eviction_policy="evict_first").to(ACC) * a[:, None]
    if ACCUMULATE:
        y += tl.load(y_at, mask=mask, other=0.0, eviction_policy="evict_first").to(ACC)
    # y streams out, unless a later group of paths adds to it
    tl.store(y_at, y.to(y_ptr.dtype.element_ty), mask=mask, eviction_policy="evict_first" if LAST else "evict_last")


@triton.jit
def path_combine_backward_kernel(
    dy_ptr, sdb, sdc, sdhw,
    dx0, dx1, dx2, dx3, sgb, sgc, sghw,
    att_ptr, coef_ptr, p0, P_ALL, C, HW, n_hwblocks, n_cblocks,
    P: tl.constexpr, LAST: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr,
):
    b, c, hw, mask = scale_tile(tl.program_id(0), 0, C, HW, n_hwblocks, n_cblocks, BLOCK_C, BLOCK_HW)
    cm = c < C
    # dy's last read, unless a later group of paths reads it again
    dy = tl.load(dy_ptr + b * sdb + c[:, None] * sdc + hw[None, :] * sdhw, mask=mask, other=0.0,
                 eviction_policy="evict_first" if LAST else "evict_last").to(ACC)
    k = tl.load(coef_ptr + b * C + c, mask=cm, other=0.0).to(ACC)
    dx_off = b * sgb + c[:, None] * sgc + hw[None, :] * sghw
    att_row = att_ptr + (b * P_ALL + p0) * C + c
    for p in tl.static_range(P):
        a = tl.load(att_row + p * C, mask=cm, other=0.0).to(ACC)
        dxp = _path(dx0, dx1, dx2, dx3, p)
        tl.store(dxp + dx_off, (dy * a[:, None] + k[:, None]).to(dxp.dtype.element_ty), mask=mask,
                 eviction_policy="evict_first")


# ---- launchers -------------------------------------------------------------------------

def path_views(xs: list[torch.Tensor]) -> list[ChannelView]:
    """Channel views of the paths with one common set of strides (the kernels share them).
    Paths whose strides differ from path 0's are copied into its memory format once; if that
    still leaves them different (path 0 is a strided slice), every path is copied."""
    views = [channel_view(x) for x in xs]
    if all(v[1:] == views[0][1:] for v in views):
        return views
    fmt = suggested_memory_format(xs[0])
    views = [channel_view(x.contiguous(memory_format=fmt)) for x in xs]
    if all(v[1:] == views[0][1:] for v in views):
        return views
    return [channel_view(x.contiguous()) for x in xs]


class Branches(NamedTuple):
    """P same-shape branch tensors (PSA's splits, SK's paths) as the launchers see them."""
    P: int
    B: int
    C: int
    H: int
    W: int
    dt: torch.dtype          # vectors' (accumulation) dtype
    acc: object              # the kernels' ACC constexpr
    device: torch.device
    views: list              # ChannelView per branch
    plan: PoolPlan           # pooling tiles / H*W split for all B samples at once


def branches(xs: list[torch.Tensor], common_strides: bool = False) -> Branches:
    """Shapes, dtypes, channel views (with one set of strides if ``common_strides``, as the
    path_sum kernels need) and the pooling plan of the branch tensors ``xs``."""
    views = path_views(xs) if common_strides else [channel_view(x) for x in xs]
    B, C, H, W = xs[0].shape
    dtype = xs[0].dtype
    return Branches(len(xs), B, C, H, W, acc_torch_dtype(dtype), acc_dtype(dtype), xs[0].device, views,
                    plan_pool(views[0], B, C, H * W))


def path_groups(P: int) -> list[range]:
    """Paths in launch groups of at most MAX_PATHS."""
    return [range(g, min(g + MAX_PATHS, P)) for g in range(0, P, MAX_PATHS)]


def _pointers(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return tensors + [tensors[0]] * (MAX_PATHS - len(tensors))


def path_pool(views: list[ChannelView], plan: PoolPlan, sums: torch.Tensor,
              dy: ChannelView | None = None) -> None:
    """Pooling partials of all paths into ``sums``: [groups * S, B, C] sums of sum_p x_p
    (group g in split rows g*S..), or, with dy, [S, B * P, C] sums of dy * x_p (row b*P + p)."""
    B, C, H, W = views[0].tensor.shape
    P = len(views)
    v0, d = views[0], dy if dy is not None else views[0]
    for gi, group in enumerate(path_groups(P)):
        ptrs = _pointers([views[p].tensor for p in group])
        product = dy is not None
        fast(path_pool_kernel)[(B * plan.n_cblocks, plan.n_splits)](
            *ptrs, v0.sb, v0.sc, v0.shw, d.tensor, d.sb, d.sc, d.shw,
            sums, 0 if product else gi * plan.n_splits, sums.shape[1],
            P if product else 1, group.start if product else 0,
            C, H * W, plan.hw_per_split, plan.n_cblocks,
            P=len(group), PRODUCT=product,
            BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw, ACC=acc_dtype(v0.tensor.dtype), num_warps=STREAM_WARPS,
        )


def path_combine(views: list[ChannelView], y: ChannelView, att: torch.Tensor, plan: PoolPlan) -> None:
    """y = sum_p att[:, p*C:(p+1)*C] * x_p, with att [B, P*C]."""
    B, C, H, W = views[0].tensor.shape
    v0 = views[0]
    grid, n_hw = scale_grid(plan, B, H * W)
    groups = path_groups(len(views))
    for gi, group in enumerate(groups):
        fast(path_combine_kernel)[grid](
            *_pointers([views[p].tensor for p in group]), v0.sb, v0.sc, v0.shw,
            y.tensor, y.sb, y.sc, y.shw, att, group.start, len(views), C, H * W, n_hw, plan.n_cblocks,
            P=len(group), ACCUMULATE=gi > 0, LAST=gi == len(groups) - 1,
            BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw, ACC=acc_dtype(v0.tensor.dtype), num_warps=STREAM_WARPS,
        )


def path_combine_backward(dy: ChannelView, dxs: list[ChannelView], att: torch.Tensor, coef: torch.Tensor,
                          plan: PoolPlan) -> None:
    """dx_p = dy * att[:, p*C:(p+1)*C] + coef for every path; att [B, P*C], coef [B, C]."""
    B, C, H, W = dy.tensor.shape
    g0 = dxs[0]
    grid, n_hw = scale_grid(plan, B, H * W)
    groups = path_groups(len(dxs))
    for gi, group in enumerate(groups):
        fast(path_combine_backward_kernel)[grid](
            dy.tensor, dy.sb, dy.sc, dy.shw,
            *_pointers([dxs[p].tensor for p in group]), g0.sb, g0.sc, g0.shw,
            att, coef, group.start, len(dxs), C, H * W, n_hw, plan.n_cblocks,
            P=len(group), LAST=gi == len(groups) - 1,
            BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw, ACC=acc_dtype(dy.tensor.dtype), num_warps=STREAM_WARPS,
        )
