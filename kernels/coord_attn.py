"""Coordinate Attention's x-sized passes: strip sums and the strip-gated scale.

Forward: one pass gives both strip means of x (x_h [B, C, H] over W, x_w [B, C, W] over H), the
gate runs on those [B, C, H + W] vectors (fusedattn.ops.coord_attn), one pass writes

    y[b, c, h, w] = x * a_h[b, c, h] * a_w[b, c, w]  (+ x with has_skip)

Backward: one pass over dy and x gives both strip sums of dy * x times the other strip's gate,

    da_h[b, c, h] = sum_w dy * x * a_w[b, c, w],   da_w[b, c, w] = sum_h dy * x * a_h[b, c, h]

the gate's backward turns them into the strip means' gradients k_h (already / W) and k_w
(/ H), and one pass over dy writes dx = dy * a_h * a_w (+ dy) + k_h[b, c, h] + k_w[b, c, w].

One program owns a [BLOCK_C, BLOCK_W] column tile of one sample and walks down a range of rows h,
so the column sums stay in registers and each row's sum is one store; its a_w tile is loaded
once. Grid: (sample x channel block, W tiles, H splits). The row sums of different W tiles and the
column sums of different H splits are partials ([n_wtiles, B, C, H], [n_hsplits, B, C, W]), added
afterwards in a fixed order (deterministic, no atomics). Any strides (4-D, no copy).
"""
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import config
from .layout import STREAM_WARPS, acc_dtype, acc_torch_dtype, cdiv, next_pow2


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
def strip_sums_kernel(
    x_ptr, sxb, sxc, sxh, sxw,
    dy_ptr, sdb, sdc, sdh, sdw,
    ah_ptr, aw_ptr,
    rows_ptr, cols_ptr,
    B, C, H, W, h_per_split, n_cblocks,
    GRAD: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr,
):
    """Row sums into rows [n_wtiles, B, C, H] and column sums into cols [n_hsplits, B, C, W] of
    x (means: / W and / H), or with GRAD of dy * x * a_w (rows) and dy * x * a_h (columns)."""
    b, c, w, cm, m, wt, hs = _column_tile(C, W, n_cblocks, BLOCK_C, BLOCK_W)
    bc = b * C + c
    x_tile = x_ptr + b * sxb + c[:, None] * sxc + w[None, :] * sxw
    dy_tile = dy_ptr + b * sdb + c[:, None] * sdc + w[None, :] * sdw
    if GRAD:
        aw = tl.load(aw_ptr + bc[:, None] * W + w[None, :], mask=m, other=0.0).to(ACC)
    col = tl.zeros([BLOCK_C, BLOCK_W], dtype=ACC)
    h0 = hs * h_per_split
    for h in range(h0, tl.minimum(h0 + h_per_split, H)):
        v = tl.load(x_tile + h * sxh, mask=m, other=0.0).to(ACC)
        if GRAD:
            v = v * tl.load(dy_tile + h * sdh, mask=m, other=0.0).to(ACC)
            ah = tl.load(ah_ptr + bc * H + h, mask=cm, other=0.0).to(ACC)
            row = tl.sum(v * aw, axis=1)
            col += v * ah[:, None]
        else:
            row = tl.sum(v, axis=1) / W
            col += v
        tl.store(rows_ptr + (wt * B * C + bc) * H + h, row, mask=cm)
    if not GRAD:
        col = col / H
    tl.store(cols_ptr + (hs * B * C + bc)[:, None] * W + w[None, :], col, mask=m)


@triton.jit
def strip_scale_kernel(
    v_ptr, svb, svc, svh, svw,
    out_ptr, sob, soc, soh, sow,
    ah_ptr, aw_ptr, kh_ptr, kw_ptr,
    C, H, W, h_per_split, n_cblocks,
    SKIP: tl.constexpr, ADD: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr,
):
    """out = v * a_h[h] * a_w[w] (+ v with SKIP) (+ k_h[h] + k_w[w] with ADD): y from x, or dx
    from dy."""
    b, c, w, cm, m, wt, hs = _column_tile(C, W, n_cblocks, BLOCK_C, BLOCK_W)
    bc = b * C + c
    v_tile = v_ptr + b * svb + c[:, None] * svc + w[None, :] * svw
    out_tile = out_ptr + b * sob + c[:, None] * soc + w[None, :] * sow
    aw = tl.load(aw_ptr + bc[:, None] * W + w[None, :], mask=m, other=0.0).to(ACC)
    if ADD:
        kw = tl.load(kw_ptr + bc[:, None] * W + w[None, :], mask=m, other=0.0).to(ACC)
    h0 = hs * h_per_split
    for h in range(h0, tl.minimum(h0 + h_per_split, H)):
        v = tl.load(v_tile + h * svh, mask=m, other=0.0, eviction_policy="evict_first").to(ACC)
        ah = tl.load(ah_ptr + bc * H + h, mask=cm, other=0.0).to(ACC)
        out = v * ah[:, None] * aw
        if SKIP:
            out += v
        if ADD:
            out += tl.load(kh_ptr + bc * H + h, mask=cm, other=0.0).to(ACC)[:, None] + kw
        tl.store(out_tile + h * soh, out.to(out_ptr.dtype.element_ty), mask=m, eviction_policy="evict_first")


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
    """[BLOCK_C, BLOCK_W] tiles of about ``elems`` elements, longest along the contiguous axis (W
    in NCHW, C in channels_last); H split until the grid has the device's target program count, in
    at most H / 8 splits."""
    B, C, H, W = x.shape
    pc, pw = next_pow2(C), next_pow2(W)
    if abs(x.stride(1)) == 1 and abs(x.stride(3)) != 1:
        block_c = min(pc, 128)
        block_w = min(pw, max(elems // block_c, 1))
    else:
        block_w = min(pw, 1024)
        block_c = min(pc, max(elems // block_w, 1))
    n_cblocks, n_wtiles = cdiv(C, block_c), cdiv(W, block_w)
    programs = B * n_cblocks * n_wtiles
    # each H split writes a [B, C, W] partial of column sums: at most H / 8 splits keeps them under
    # 1/8 of x's size (one split per row would add a pass)
    splits = min(max(cdiv(config.device_target_programs(x.device), programs), 1), max(H // 8, 1))
    h_per_split = cdiv(H, splits)
    return StripPlan(block_c, block_w, n_cblocks, n_wtiles, cdiv(H, h_per_split), h_per_split)


def _strip_sums(x, dy, a_h, a_w, grad: bool):
    B, C, H, W = x.shape
    plan = plan_strips(x)
    dt = acc_torch_dtype(x.dtype)
    rows = config.new_buffer((plan.n_wtiles, B, C, H), dt, x.device)
    cols = config.new_buffer((plan.n_hsplits, B, C, W), dt, x.device)
    d = dy if grad else x
    strip_sums_kernel[plan.grid(B)](
        x, *x.stride(), d, *d.stride(), a_h if grad else rows, a_w if grad else rows, rows, cols,
        B, C, H, W, plan.h_per_split, plan.n_cblocks,
        GRAD=grad, BLOCK_C=plan.block_c, BLOCK_W=plan.block_w, ACC=acc_dtype(x.dtype), num_warps=STREAM_WARPS,
    )
    # the partials in a fixed order (one of each in most plans: no op then)
    return (rows[0] if plan.n_wtiles == 1 else rows.sum(0)), (cols[0] if plan.n_hsplits == 1 else cols.sum(0))


def strip_means(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, C, H, W] -> (mean over W [B, C, H], mean over H [B, C, W]) in the accumulation dtype."""
    return _strip_sums(x, None, None, None, grad=False)


def strip_gate_grads(dy: torch.Tensor, x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor):
    """(da_h [B, C, H] = sum_w dy x a_w, da_w [B, C, W] = sum_h dy x a_h), accumulation dtype."""
    return _strip_sums(x, dy, a_h, a_w, grad=True)


def strip_scale(v: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor, skip: bool,
                k_h: torch.Tensor | None = None, k_w: torch.Tensor | None = None) -> torch.Tensor:
    """v * a_h[:, :, :, None] * a_w[:, :, None, :] (+ v) (+ k_h[..., None] + k_w[..., None, :]) in
    v's dtype and fusedattn's output layout; the vectors are [B, C, H] / [B, C, W], contiguous."""
    B, C, H, W = v.shape
    plan = plan_strips(v)
    out = config.new_like(v)
    add = k_h is not None
    strip_scale_kernel[plan.grid(B)](
        v, *v.stride(), out, *out.stride(), a_h, a_w, k_h if add else a_h, k_w if add else a_w,
        C, H, W, plan.h_per_split, plan.n_cblocks,
        SKIP=skip, ADD=add, BLOCK_C=plan.block_c, BLOCK_W=plan.block_w, ACC=acc_dtype(v.dtype),
        num_warps=STREAM_WARPS,
    )
    return out
