"""SimAM, forward and backward, one launch each: per (b, c) statistics over H*W, then the
elementwise pass, in the same program.

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
import torch
import triton
import triton.language as tl

from . import config
from .activations import sigmoid
from .layout import STREAM_WARPS, ChannelView, acc_dtype, acc_torch_dtype, cdiv, channel_view, tile_shape


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
def simam_forward_kernel(
    x_ptr, sxb, sxc, sxhw,
    y_ptr, syb, syc, syhw,
    centre_ptr, rinv_ptr,
    C, HW, n_cblocks, lam_hi, lam_lo,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr,
):
    b, c, cm = _slab(C, n_cblocks, BLOCK_C)
    x_rows = x_ptr + b * sxb + c[:, None] * sxc
    shift = _shift(x_rows, cm).to(ACC)
    mean = tl.zeros([BLOCK_C], dtype=ACC)
    m2 = tl.zeros([BLOCK_C], dtype=ACC)
    for hw0 in range(0, HW, BLOCK_HW):
        hw = hw0 + tl.arange(0, BLOCK_HW)
        m = cm[:, None] & (hw < HW)[None, :]
        u = tl.load(x_rows + hw.to(tl.int64)[None, :] * sxhw, mask=m, other=0.0,
                    eviction_policy="evict_last").to(ACC) - shift
        u = tl.where(m, u, 0.0)
        n_seen_i = hw0 + tl.zeros([BLOCK_C], dtype=tl.int32)    # every earlier tile was full
        n_tile = tl.minimum(HW - n_seen_i, BLOCK_HW).to(ACC)
        t_mean = tl.sum(u, axis=1) / n_tile
        t_dev = tl.where(m, u - t_mean[:, None], 0.0)
        t_m2 = tl.sum(t_dev * t_dev, axis=1)
        n_seen = n_seen_i.to(ACC)
        n_all = n_seen + n_tile
        delta = t_mean - mean
        mean += delta * (n_tile / n_all)
        m2 += t_m2 + delta * delta * (n_seen * n_tile / n_all)
    lam = tl.cast(lam_hi, ACC) + tl.cast(lam_lo, ACC)
    r = 1.0 / (4.0 * (m2 / (HW - 1.0) + lam))
    tl.store(centre_ptr + b * C + c, mean, mask=cm)
    tl.store(rinv_ptr + b * C + c, r, mask=cm)

    y_rows = y_ptr + b * syb + c[:, None] * syc
    for hw0 in range(0, HW, BLOCK_HW):
        hw = (hw0 + tl.arange(0, BLOCK_HW)).to(tl.int64)[None, :]
        m = cm[:, None] & (hw < HW)
        v = tl.load(x_rows + hw * sxhw, mask=m, other=0.0, eviction_policy="evict_first").to(ACC)
        s, _ = _energy_gate(v, shift, mean, r)
        tl.store(y_rows + hw * syhw, (v * s).to(y_ptr.dtype.element_ty), mask=m, eviction_policy="evict_first")


@triton.jit
def simam_backward_kernel(
    dy_ptr, sdb, sdc, sdhw,
    x_ptr, sxb, sxc, sxhw,
    dx_ptr, sgb, sgc, sghw,
    centre_ptr, rinv_ptr,
    C, HW, n_cblocks,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr,
):
    b, c, cm = _slab(C, n_cblocks, BLOCK_C)
    x_rows = x_ptr + b * sxb + c[:, None] * sxc
    dy_rows = dy_ptr + b * sdb + c[:, None] * sdc
    shift = _shift(x_rows, cm).to(ACC)
    centre = tl.load(centre_ptr + b * C + c, mask=cm, other=0.0).to(ACC)
    r = tl.load(rinv_ptr + b * C + c, mask=cm, other=0.0).to(ACC)
    s_d = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    s_c = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    for hw0 in range(0, HW, BLOCK_HW):
        hw = (hw0 + tl.arange(0, BLOCK_HW)).to(tl.int64)[None, :]
        m = cm[:, None] & (hw < HW)
        v = tl.load(x_rows + hw * sxhw, mask=m, other=0.0, eviction_policy="evict_last").to(ACC)
        g = tl.load(dy_rows + hw * sdhw, mask=m, other=0.0, eviction_policy="evict_last").to(ACC)
        s, dev = _energy_gate(v, shift, centre, r)
        q = g * v * s * (1.0 - s)
        s_d += q * dev * dev
        s_c += q * dev
    k_var = 4.0 * r * r * tl.sum(s_d, axis=1) / (HW - 1.0)
    k_mean = 2.0 * r * tl.sum(s_c, axis=1) / HW

    dx_rows = dx_ptr + b * sgb + c[:, None] * sgc
    for hw0 in range(0, HW, BLOCK_HW):
        hw = (hw0 + tl.arange(0, BLOCK_HW)).to(tl.int64)[None, :]
        m = cm[:, None] & (hw < HW)
        v = tl.load(x_rows + hw * sxhw, mask=m, other=0.0, eviction_policy="evict_first").to(ACC)
        g = tl.load(dy_rows + hw * sdhw, mask=m, other=0.0, eviction_policy="evict_first").to(ACC)
        s, dev = _energy_gate(v, shift, centre, r)
        q = g * v * s * (1.0 - s)
        dx = g * s + 2.0 * dev * (q * r[:, None] - k_var[:, None]) - k_mean[:, None]
        tl.store(dx_rows + hw * sghw, dx.to(dx_ptr.dtype.element_ty), mask=m, eviction_policy="evict_first")


def _plan(xv: ChannelView, C: int, HW: int) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_HW, channel blocks): about 2048-element tiles along the contiguous axis."""
    block_c, block_hw = tile_shape(xv, C, HW)
    return block_c, block_hw, cdiv(C, block_c)


def _split_float(v: float) -> tuple[float, float]:
    """v as float32 high part + float32 low part: a scalar argument of a Triton kernel is float32,
    and their sum in float64 is v to about 48 bits (the float64 path's gradcheck needs e_lambda
    as exactly as the reference uses it)."""
    hi = float(torch.tensor(v, dtype=torch.float32))
    return hi, float(torch.tensor(v - hi, dtype=torch.float32))


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
    block_c, block_hw, n_cb = _plan(xv, C, H * W)
    lam_hi, lam_lo = _split_float(e_lambda)
    simam_forward_kernel[(B * n_cb,)](
        xv.tensor, xv.sb, xv.sc, xv.shw, y, yv.sb, yv.sc, yv.shw, centre, rinv,
        C, H * W, n_cb, lam_hi, lam_lo,
        BLOCK_C=block_c, BLOCK_HW=block_hw, ACC=acc_dtype(x.dtype), num_warps=STREAM_WARPS,
    )
    return y, centre, rinv


def simam_backward(dy: torch.Tensor, x: torch.Tensor, centre: torch.Tensor, rinv: torch.Tensor) -> torch.Tensor:
    """dx of simam_forward from dy and the saved x, centre, rinv."""
    B, C, H, W = x.shape
    xv, dyv = channel_view(x), channel_view(dy)
    dx = config.new_like(xv.tensor)
    dxv = channel_view(dx)
    block_c, block_hw, n_cb = _plan(xv, C, H * W)
    simam_backward_kernel[(B * n_cb,)](
        dyv.tensor, dyv.sb, dyv.sc, dyv.shw, xv.tensor, xv.sb, xv.sc, xv.shw, dx, dxv.sb, dxv.sc, dxv.shw,
        centre, rinv, C, H * W, n_cb,
        BLOCK_C=block_c, BLOCK_HW=block_hw, ACC=acc_dtype(x.dtype), num_warps=STREAM_WARPS,
    )
    return dx
