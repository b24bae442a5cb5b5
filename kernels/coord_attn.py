"""Coordinate Attention's x-sized passes: strip sums and the strip-gated scale.

The strip vectors live position-major, [H + W, B, C] (rows h first, then columns w; channels
contiguous): the gate's 1x1 convs are then plain matrix products on [(H + W) B, C] rows, the h and
w halves are contiguous row ranges, and the kernels read a strip value of B x C channels as
coalesced C-runs.

Forward: one pass gives both strip means of x (p[h] = mean over W, p[H + w] = mean over H), the
gate runs on p (fusedattn.ops.coord_attn), one pass writes

    y[b, c, h, w] = x * a[h, b, c] * a[H + w, b, c]  (+ x with has_skip)

Backward: one pass over dy and x gives both strip sums of dy * x times the other strip's gate,

    da[h, b, c] = sum_w dy x a[H + w, b, c],   da[H + w, b, c] = sum_h dy x a[h, b, c]

the gate's backward turns them into dp (the strip means' gradients), and one pass over dy writes
dx = dy a_h a_w (+ dy) + dp[h] / W + dp[H + w] / H.

One program owns a [BLOCK_C, BLOCK_W] column tile of one sample and walks down a range of rows h,
so the column sums stay in registers and each row's sum is one store; its a_w tile is loaded
once. Grid: (sample x channel block, W tiles, H splits). With one W tile and one H split the sums
land in p directly; otherwise the row sums of each W tile and the column sums of each H split are
partials ([n_wtiles, H, B, C], [n_hsplits, W, B, C]) added afterwards in a fixed order
(deterministic, no atomics). Any strides of x (4-D, no copy). W is a constexpr (a variant per
width: masks and row alignment become provable, so NCHW rows of 56 and 28 elements load 16 bytes
at a time where their byte width allows).
"""
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import config
from .layout import STREAM_WARPS, acc_dtype, acc_torch_dtype, cdiv, next_pow2
from .launch import fast


@triton.jit
def _column_tile(C, W, n_cblocks, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr):
    """(b, c [BLOCK_C], w [BLOCK_W], channel mask, tile mask, W tile, H split) of this program."""
    pid = tl.program_id(0)
    b = (pid // n_cblocks).to(tl.int64)
    c = (pid % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    w = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    cm = c < C
    return b, c.to(tl.int64), w.to(tl.int64), cm, cm[:, None] & (w < W)[None, :], tl.program_id(1), tl.program_id(2)


@triton.jit
def _row(h, b, stride, ALIGN: tl.constexpr):
    """Offset of row h (int64), known to be a multiple of ALIGN elements (the launcher's proof of
    the row stride's alignment, which the JIT's divisibility-by-16 hint misses at W = 56, 28)."""
    return tl.multiple_of((b * 0 + h) * stride, ALIGN)


@triton.jit
def strip_sums_kernel(
    x_ptr, sxb, sxc, sxh, sxw,
    dy_ptr, sdb, sdc, sdh, sdw,
    a_ptr, rows_ptr, rows_part, cols_ptr, cols_part,
    B, C, H, h_per_split, n_cblocks, W: tl.constexpr,
    GRAD: tl.constexpr, X_ALIGN: tl.constexpr, DY_ALIGN: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr,
):
    """Row sums into rows[W tile, h, b, c] and column sums into cols[H split, w, b, c] (partial
    strides rows_part, cols_part) of x (means: / W and / H), or with GRAD of dy * x * a_w (rows)
    and dy * x * a_h (columns), a = [a_h; a_w] as [H + W, B, C]."""
    b, c, w, cm, m, wt, hs = _column_tile(C, W, n_cblocks, BLOCK_C, BLOCK_W)
    bc = b * C + c
    x_tile = x_ptr + b * sxb + c[:, None] * sxc + w[None, :] * sxw
    dy_tile = dy_ptr + b * sdb + c[:, None] * sdc + w[None, :] * sdw
    BC = B * C
    if GRAD:
        aw = tl.load(a_ptr + (H + w[None, :]) * BC + bc[:, None], mask=m, other=0.0).to(ACC)
    col = tl.zeros([BLOCK_C, BLOCK_W], dtype=ACC)
    h0 = hs * h_per_split
    rows_out = rows_ptr + wt * rows_part + bc
    for h in range(h0, tl.minimum(h0 + h_per_split, H)):
        v = tl.load(x_tile + _row(h, b, sxh, X_ALIGN), mask=m, other=0.0,
                    eviction_policy="evict_first" if GRAD else "evict_last").to(ACC)
        if GRAD:
            v = v * tl.load(dy_tile + _row(h, b, sdh, DY_ALIGN), mask=m, other=0.0,
                            eviction_policy="evict_last").to(ACC)
            ah = tl.load(a_ptr + h * BC + bc, mask=cm, other=0.0).to(ACC)
            row = tl.sum(v * aw, axis=1)
            col += v * ah[:, None]
        else:
            row = tl.sum(v, axis=1) / W
            col += v
        tl.store(rows_out + h * BC, row, mask=cm)
    if not GRAD:
        col = col / H
    tl.store(cols_ptr + hs * cols_part + w[None, :] * BC + bc[:, None], col, mask=m)


@triton.jit
def strip_scale_kernel(
    v_ptr, svb, svc, svh, svw,
    out_ptr, sob, soc, soh, sow,
    a_ptr, k_ptr,
    B, C, H, h_per_split, n_cblocks, W: tl.constexpr,
    SKIP: tl.constexpr, ADD: tl.constexpr, V_ALIGN: tl.constexpr, OUT_ALIGN: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr,
):
    """out = v * a[h] * a[H + w] (+ v with SKIP) (+ k[h] / W + k[H + w] / H with ADD): y from x,
    or dx from dy and k = dp; a and k are [H + W, B, C]."""
    b, c, w, cm, m, wt, hs = _column_tile(C, W, n_cblocks, BLOCK_C, BLOCK_W)
    bc = b * C + c
    BC = B * C
    v_tile = v_ptr + b * svb + c[:, None] * svc + w[None, :] * svw
    out_tile = out_ptr + b * sob + c[:, None] * soc + w[None, :] * sow
    col_vec = (H + w[None, :]) * BC + bc[:, None]
    aw = tl.load(a_ptr + col_vec, mask=m, other=0.0).to(ACC)
    if ADD:
        kw = tl.load(k_ptr + col_vec, mask=m, other=0.0).to(ACC) / H
    h0 = hs * h_per_split
    for h in range(h0, tl.minimum(h0 + h_per_split, H)):
        v = tl.load(v_tile + _row(h, b, svh, V_ALIGN), mask=m, other=0.0, eviction_policy="evict_first").to(ACC)
        ah = tl.load(a_ptr + h * BC + bc, mask=cm, other=0.0).to(ACC)
        out = v * ah[:, None] * aw
        if SKIP:
            out += v
        if ADD:
            out += (tl.load(k_ptr + h * BC + bc, mask=cm, other=0.0).to(ACC) / W)[:, None] + kw
        tl.store(out_tile + _row(h, b, soh, OUT_ALIGN), out.to(out_ptr.dtype.element_ty), mask=m,
                 eviction_policy="evict_first")


class StripPlan(NamedTuple):
    block_c: int
    block_w: int
    n_cblocks: int
    n_wtiles: int
    n_hsplits: int
    h_per_split: int

    def grid(self, B: int) -> tuple[int, int, int]:
        return (B * self.n_cblocks, self.n_wtiles, self.n_hsplits)


def plan_strips(x: torch.Tensor, elems: int = 2048) -> StripPlan:
    """[BLOCK_C, BLOCK_W] tiles of about ``elems`` elements. NCHW: along W. channels_last: up to 64
    columns (one W tile to W = 64: no row partials) by 32 to 256 channels (64-byte runs and more).
    H split only when the grid has under half the device's target program count (batch 1), in at
    most H / 8 splits: each writes a [W, B, C] partial of column sums, under 1/8 of x's size."""
    B, C, H, W = x.shape
    pc, pw = next_pow2(C), next_pow2(W)
    if abs(x.stride(1)) == 1 and abs(x.stride(3)) != 1:
        block_w = min(pw, 64)
        block_c = min(pc, max(elems // block_w, 32), 256)
    else:
        block_w = min(pw, 1024)
        block_c = min(pc, max(elems // block_w, 1))
    n_cblocks, n_wtiles = cdiv(C, block_c), cdiv(W, block_w)
    programs = B * n_cblocks * n_wtiles
    target = config.device_target_programs(x.device)
    splits = min(cdiv(target, programs), max(H // 8, 1)) if 2 * programs < target else 1
    h_per_split = cdiv(H, splits)
    return StripPlan(block_c, block_w, n_cblocks, n_wtiles, cdiv(H, h_per_split), h_per_split)


def row_alignment(t: torch.Tensor) -> int:
    """The largest power of two (at most 16) dividing t's H stride, in elements: with W a constexpr
    it lets the compiler prove 16-byte aligned rows (W = 56: 8; W = 28: 4)."""
    stride = abs(t.stride(2))
    return min(stride & -stride, 16) if stride else 16


def _strip_sums(x, dy, a, grad: bool) -> torch.Tensor:
    """[H + W, B, C] in the accumulation dtype: the sums (see strip_sums_kernel)."""
    B, C, H, W = x.shape
    plan = plan_strips(x)
    dt = acc_torch_dtype(x.dtype)
    out = config.new_buffer((H + W, B, C), dt, x.device)
    partials = plan.n_wtiles > 1 or plan.n_hsplits > 1
    if partials:
        rows = config.new_buffer((plan.n_wtiles, H, B, C), dt, x.device)
        cols = config.new_buffer((plan.n_hsplits, W, B, C), dt, x.device)
    else:
        rows, cols = out, out[H:]
    d = dy if grad else x
    fast(strip_sums_kernel)[plan.grid(B)](
        x, *x.stride(), d, *d.stride(), a if grad else out, rows, H * B * C, cols, W * B * C,
        B, C, H, plan.h_per_split, plan.n_cblocks, W=W,
        GRAD=grad, X_ALIGN=row_alignment(x), DY_ALIGN=row_alignment(d),
        BLOCK_C=plan.block_c, BLOCK_W=plan.block_w, ACC=acc_dtype(x.dtype), num_warps=STREAM_WARPS,
    )
    if partials:   # the partials in a fixed order
        torch.sum(rows, 0, out=out[:H])
        torch.sum(cols, 0, out=out[H:])
    return out


def strip_means(x: torch.Tensor) -> torch.Tensor:
    """x [B, C, H, W] -> p [H + W, B, C] (means over W, then means over H), accumulation dtype."""
    return _strip_sums(x, None, None, grad=False)


def strip_gate_grads(dy: torch.Tensor, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """da [H + W, B, C]: sum_w dy x a_w at the rows, sum_h dy x a_h at the columns (a [H + W, B, C],
    contiguous), accumulation dtype."""
    return _strip_sums(x, dy, a, grad=True)


def strip_scale(v: torch.Tensor, a: torch.Tensor, skip: bool, k: torch.Tensor | None = None) -> torch.Tensor:
    """v * a_h * a_w (+ v) (+ k[h] / W + k[H + w] / H) in v's dtype and fusedattn's output layout;
    a and k [H + W, B, C], contiguous."""
    B, C, H, W = v.shape
    plan = plan_strips(v)
    out = config.new_like(v)
    fast(strip_scale_kernel)[plan.grid(B)](
        v, *v.stride(), out, *out.stride(), a, k if k is not None else a,
        B, C, H, plan.h_per_split, plan.n_cblocks, W=W,
        SKIP=skip, ADD=k is not None, V_ALIGN=row_alignment(v), OUT_ALIGN=row_alignment(out),
        BLOCK_C=plan.block_c, BLOCK_W=plan.block_w, ACC=acc_dtype(v.dtype), num_warps=STREAM_WARPS,
    )
    return out
