"""A whole channel-gate block in one launch: pool -> gate -> y = act(x * gate (+ shortcut)).

For small calls (batch 1, late stages) the pipeline's launches per chunk (3; SE's 2) cost more
than the data: each launch has a fixed cost on the GPU and on the host. Here one program does a
whole block for its rows of x; its second read of x finds them in L1/L2, where its first read
left them (loaded evict_last; the second read and y are evict_first):

- SE (``se_one_launch_kernel``): one program per sample. The MLP needs every channel's pooled
  value, so a program pools the whole sample (tile by tile, accumulating W1 @ p), then per
  channel tile computes the gate and rescales. Chosen when one program's bytes (x twice, the
  weights) take one SM about as long as the launches it saves (``se_fits_one_launch``).
- ECA / CECA (``eca_one_launch_kernel``): the gate of channel c needs the pooled values of
  c - PAD .. c + PAD only, so one program per (sample, channel tile) pools its tile and a halo of
  PAD channels on each side (pooled again by the neighbour tile: 2 * PAD / BLOCK_C extra reads),
  writes them to its own scratch row, and after a barrier takes the K taps from that row. Fully
  parallel at any batch, so ECA always runs this way.

Outputs are the pipeline's: y, and the [B, C] pooled / hidden / gate vectors its backward reads.
"""
import functools

import torch
import triton
import triton.language as tl

from . import config
from .eca_gate import _tap, eca_block_c
from .layout import ChannelView, STREAM_WARPS, acc_dtype, cdiv, next_pow2
from .activations import RELU, SIGMOID, activation, activation_grad, gate_grad, sigmoid
from .se_gate import gate_of, store_hidden, store_pooled, w1_times, w1t_times, w2t_times
from .nan_math import max_along, max_grad, maximum
from .launch import fast

#: Elements of one [BLOCK_C, BLOCK_HW] tile a one-launch program streams (8 warps: 16 each).
TILE_ELEMS = 4096
#: Below this many bytes of x a program's fixed cost dominates: ECA's tiles are not cut finer.
MIN_PROGRAM_BYTES = 32 * 1024


@triton.jit
def reduce_rows(x_rows, sxc, sxhw, dy_rows, sdc, sdhw, ref, c, cmask, HW, PRODUCT: tl.constexpr,
                WITH_MAX: tl.constexpr, COUNT_TIES: tl.constexpr,
                BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr):
    """Over the H*W positions of channels c of one sample: (sum of x, or of dy * x if PRODUCT;
    max of x (-inf unless WITH_MAX); #(x == ref[c]) (0 unless COUNT_TIES)), [BLOCK_C] each. The
    rows pointers point at the sample; x is kept in L2 (evict_last) when a later pass re-reads it."""
    c64 = c.to(tl.int64)[:, None]
    acc = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    mx = tl.full([BLOCK_C, BLOCK_HW], float("-inf"), dtype=ACC)
    cnt = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    for hw0 in range(0, HW, BLOCK_HW):
        hw = (hw0 + tl.arange(0, BLOCK_HW)).to(tl.int64)[None, :]
        m = cmask[:, None] & (hw < HW)
        v = tl.load(x_rows + c64 * sxc + hw * sxhw, mask=m, other=0.0,
                    eviction_policy="evict_first" if PRODUCT and not COUNT_TIES else "evict_last").to(ACC)
        if PRODUCT:
            acc += v * tl.load(dy_rows + c64 * sdc + hw * sdhw, mask=m, other=0.0,
                               eviction_policy="evict_last").to(ACC)
        else:
            acc += v
        if WITH_MAX:
            mx = maximum(mx, tl.where(m, v, float("-inf")))
        if COUNT_TIES:
            cnt += tl.where(m & (v == ref[:, None]), 1.0, 0.0)
    return tl.sum(acc, axis=1), max_along(mx, 1), tl.sum(cnt, axis=1)


@triton.jit
def scale_rows(x_rows, sxc, sxhw, y_rows, syc, syhw, r_rows, src, srhw, g, c, cmask, hw_start, hw_end,
               HAS_RES: tl.constexpr, ACT: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr):
    """y = act(x * g[c] (+ shortcut)) for channels c of one sample, H*W positions [hw_start, hw_end)."""
    c64 = c.to(tl.int64)[:, None]
    for hw0 in range(hw_start, hw_end, BLOCK_HW):
        hw = (hw0 + tl.arange(0, BLOCK_HW)).to(tl.int64)[None, :]
        m = cmask[:, None] & (hw < hw_end)
        v = tl.load(x_rows + c64 * sxc + hw * sxhw, mask=m, other=0.0, eviction_policy="evict_first").to(ACC)
        y = v * g[:, None]
        if HAS_RES:
            y += tl.load(r_rows + c64 * src + hw * srhw, mask=m, other=0.0, eviction_policy="evict_first").to(ACC)
        y = activation(y, ACT)
        tl.store(y_rows + c64 * syc + hw * syhw, y.to(y_rows.dtype.element_ty), mask=m,
                 eviction_policy="evict_first")


@triton.jit
def input_grad_rows(dy_rows, sdc, sdhw, x_rows, sxc, sxhw, dx_rows, sgc, sghw, g, k, mx, mk, c, cmask,
                    hw_start, hw_end, WITH_MAX: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr):
    """dx = dy * g[c] + k[c] (+ (x == mx[c]) * mk[c] when WITH_MAX) for channels c of one sample,
    H*W positions [hw_start, hw_end)."""
    c64 = c.to(tl.int64)[:, None]
    for hw0 in range(hw_start, hw_end, BLOCK_HW):
        hw = (hw0 + tl.arange(0, BLOCK_HW)).to(tl.int64)[None, :]
        m = cmask[:, None] & (hw < hw_end)
        d = tl.load(dy_rows + c64 * sdc + hw * sdhw, mask=m, other=0.0, eviction_policy="evict_first").to(ACC)
        dx = d * g[:, None] + k[:, None]
        if WITH_MAX:
            v = tl.load(x_rows + c64 * sxc + hw * sxhw, mask=m, other=0.0, eviction_policy="evict_first").to(ACC)
            dx += max_grad(mk[:, None], v == mx[:, None])
        tl.store(dx_rows + c64 * sgc + hw * sghw, dx.to(dx_rows.dtype.element_ty), mask=m,
                 eviction_policy="evict_first")


@triton.jit
def pool_grad_coefs(dp, gate_ptr, pool_max_ptr, ties_ptr, b, c, cmask, C, HW, WITH_MAX: tl.constexpr,
                    ACC: tl.constexpr):
    """input_grad_rows' coefficients for channels c of sample b from dp = dL/dpooled: (gate, mean
    coefficient dp / HW, max, max coefficient), with the max pool (pooled = 0.5 mean + 0.5 max) half of
    dp each way, the max's share split over its ties ([B, C], read from L2: other threads or
    programs stored them)."""
    g = tl.load(gate_ptr + b * C + c, mask=cmask, other=0.0).to(ACC)
    mx = tl.zeros_like(dp)
    mk = tl.zeros_like(dp)
    if WITH_MAX:
        mx = tl.load(pool_max_ptr + b * C + c, mask=cmask, other=0.0).to(ACC)
        ties = tl.load(ties_ptr + b * C + c, mask=cmask, other=1.0, cache_modifier=".cg").to(ACC)
        mk = 0.5 * dp / ties
        dp = 0.5 * dp
    return g, dp / HW, mx, mk


@triton.jit
def halo_channels(c0, n, k, C, PAD, CIRCULAR: tl.constexpr):
    """The halo of channels [c0, c0 + n): k < PAD -> c0 - PAD + k, PAD <= k < 2 PAD -> c0 + n + k - PAD
    (wrapped around if CIRCULAR); and whether each is a channel (outside [0, C): zero padding)."""
    hc, valid = _tap(tl.zeros_like(k), tl.where(k < PAD, c0 - PAD + k, c0 + n + k - PAD), C, CIRCULAR)
    return hc, valid & (k < 2 * PAD)


@triton.jit
def eca_program(scratch_ptr, C, n_cblocks, BLOCK_C: tl.constexpr, HALO: tl.constexpr):
    """This ECA program's sample b, first channel c0, scratch row, lane index i, channels c and
    their mask."""
    pid = tl.program_id(0)
    b = (pid // n_cblocks).to(tl.int64)
    c0 = (pid % n_cblocks) * BLOCK_C
    i = tl.arange(0, BLOCK_C)
    c = c0 + i
    return b, c0, scratch_ptr + pid.to(tl.int64) * (BLOCK_C + HALO), i, c, c < C


@triton.jit
def se_one_launch_kernel(
    x_ptr, sxb, sxc, sxhw, y_ptr, syb, syc, syhw, res_ptr, srb, src, srhw,
    w1_ptr, b1_ptr, w2_ptr, b2_ptr, pooled_ptr, pool_max_ptr, hidden_ptr, gate_ptr,
    C, RD, HW,
    HAS_BIAS: tl.constexpr, WITH_MAX: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
    MLP_ACT: tl.constexpr, GATE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_RD: tl.constexpr, ACC: tl.constexpr,
):
    """Program b: SE of sample b (pooled, pool_max, hidden (pre-activation), gate: as se_gate)."""
    b = tl.program_id(0).to(tl.int64)
    x_rows, y_rows, r_rows = x_ptr + b * sxb, y_ptr + b * syb, res_ptr + b * srb
    r = tl.arange(0, BLOCK_RD)
    h = tl.zeros([BLOCK_RD], dtype=ACC)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        s, mx, _ = reduce_rows(x_rows, sxc, sxhw, x_rows, sxc, sxhw, c, c, cmask, HW, False, WITH_MAX, False,
                               BLOCK_C, BLOCK_HW, ACC)
        p = store_pooled(s, mx, HW, b, c, cmask, C, pooled_ptr, pool_max_ptr, WITH_MAX)
        h += w1_times(w1_ptr, p, r, c, C, RD, ACC)
    h = store_hidden(h, b1_ptr, hidden_ptr, b, r, RD, HAS_BIAS, MLP_ACT, ACC)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        g = gate_of(w2_ptr, b2_ptr, h, r, c, C, RD, HAS_BIAS, GATE, ACC)
        tl.store(gate_ptr + b * C + c, g, mask=cmask)
        scale_rows(x_rows, sxc, sxhw, y_rows, syc, syhw, r_rows, src, srhw, g, c, cmask, 0, HW,
                   HAS_RES, ACT, BLOCK_HW, ACC)


@triton.jit
def eca_one_launch_kernel(
    x_ptr, sxb, sxc, sxhw, y_ptr, syb, syc, syhw, res_ptr, srb, src, srhw,
    w_ptr, bias_ptr, pooled_ptr, gate_ptr, scratch_ptr,
    C, HW, n_cblocks,
    K: tl.constexpr, CIRCULAR: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
    ACT: tl.constexpr, BLOCK_C: tl.constexpr, HALO: tl.constexpr, BLOCK_HW: tl.constexpr,
    ACC: tl.constexpr,
):
    """Program (b, channel tile): ECA of those channels. Scratch row (BLOCK_C + HALO values):
    [PAD halo below | the tile's n pooled values | PAD halo above]; tap j of channel c0 + i is
    row[i + j]."""
    PAD = (K - 1) // 2
    b, c0, row, i, c, cmask = eca_program(scratch_ptr, C, n_cblocks, BLOCK_C, HALO)
    x_rows, y_rows, r_rows = x_ptr + b * sxb, y_ptr + b * syb, res_ptr + b * srb
    s, _, _ = reduce_rows(x_rows, sxc, sxhw, x_rows, sxc, sxhw, c, c, cmask, HW, False, False, False,
                          BLOCK_C, BLOCK_HW, ACC)
    p = tl.where(cmask, s / HW, 0.0)
    tl.store(pooled_ptr + b * C + c, p, mask=cmask)
    tl.store(row + PAD + i, p, mask=cmask)
    if K > 1:
        n = tl.minimum(C - c0, BLOCK_C)
        k = tl.arange(0, HALO)
        below = k < PAD
        hc, hvalid = halo_channels(c0, n, k, C, PAD, CIRCULAR)
        hs, _, _ = reduce_rows(x_rows, sxc, sxhw, x_rows, sxc, sxhw, hc, hc, hvalid, HW, False, False, False,
                               HALO, BLOCK_HW, ACC)
        tl.store(row + tl.where(below, k, n + k), tl.where(hvalid, hs / HW, 0.0), mask=k < 2 * PAD)
    tl.debug_barrier()   # the row's values come from other threads of this program
    z = tl.zeros([BLOCK_C], dtype=ACC)
    for j in tl.static_range(K):
        z += tl.load(w_ptr + j).to(ACC) * tl.load(row + i + j, mask=cmask, other=0.0)
    if HAS_BIAS:
        z += tl.load(bias_ptr).to(ACC)
    g = sigmoid(z)
    tl.store(gate_ptr + b * C + c, g, mask=cmask)
    scale_rows(x_rows, sxc, sxhw, y_rows, syc, syhw, r_rows, src, srhw, g, c, cmask, 0, HW,
               HAS_RES, ACT, BLOCK_HW, ACC)


@triton.jit
def se_one_launch_backward_kernel(
    dy_ptr, sdb, sdc, sdhw, x_ptr, sxb, sxc, sxhw, dx_ptr, sgb, sgc, sghw,
    w1_ptr, w2_ptr, hidden_ptr, gate_ptr, pool_max_ptr, dz_ptr, dh_ptr, ties_ptr,
    pooled_ptr, dw1_ptr, db1_ptr, dw2_ptr, db2_ptr,
    C, RD, HW,
    WITH_MAX: tl.constexpr, WEIGHT_GRADS: tl.constexpr, HAS_BIAS: tl.constexpr, MLP_ACT: tl.constexpr,
    GATE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_RD: tl.constexpr, ACC: tl.constexpr,
):
    """Program b: se_gate's backward for sample b and dx, from dy and x (dz [B, C] and dh [B, RD]
    stored for the weight gradients; ties [B, C] a scratch of the max-pool ties). With
    WEIGHT_GRADS (a batch of one: nothing to sum over samples) it also writes dW2 = dz act(h)^T,
    dW1 = dh p^T (and db2 = dz, db1 = dh) in the weights' dtype."""
    b = tl.program_id(0).to(tl.int64)
    dy_rows, x_rows, dx_rows = dy_ptr + b * sdb, x_ptr + b * sxb, dx_ptr + b * sgb
    r = tl.arange(0, BLOCK_RD)
    rmask = r < RD
    h = tl.load(hidden_ptr + b * RD + r, mask=rmask, other=0.0).to(ACC)
    t = tl.zeros([BLOCK_RD], dtype=ACC)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        mx = tl.zeros([BLOCK_C], dtype=ACC)
        if WITH_MAX:
            mx = tl.load(pool_max_ptr + b * C + c, mask=cmask, other=0.0).to(ACC)
        s, _, ties = reduce_rows(x_rows, sxc, sxhw, dy_rows, sdc, sdhw, mx, c, cmask, HW, True, False, WITH_MAX,
                                 BLOCK_C, BLOCK_HW, ACC)
        g = tl.load(gate_ptr + b * C + c, mask=cmask, other=0.0).to(ACC)
        dz = tl.where(cmask, gate_grad(s, g, GATE), 0.0)
        tl.store(dz_ptr + b * C + c, dz, mask=cmask)
        if WITH_MAX:
            tl.store(ties_ptr + b * C + c, ties, mask=cmask)
        t += w2t_times(w2_ptr, dz, r, c, C, RD, ACC)
        if WEIGHT_GRADS:
            wmask = rmask[:, None] & cmask[None, :]
            dw2 = dz[None, :] * activation(h, MLP_ACT)[:, None]
            tl.store(dw2_ptr + c[None, :] * RD + r[:, None], dw2.to(dw2_ptr.dtype.element_ty), mask=wmask)
            if HAS_BIAS:
                tl.store(db2_ptr + c, dz.to(db2_ptr.dtype.element_ty), mask=cmask)
    dh = tl.where(rmask, activation_grad(t, h, MLP_ACT), 0.0)
    tl.store(dh_ptr + b * RD + r, dh, mask=rmask)
    if WEIGHT_GRADS and HAS_BIAS:
        tl.store(db1_ptr + r, dh.to(db1_ptr.dtype.element_ty), mask=rmask)
    tl.debug_barrier()   # the ties were stored by other threads of this program
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        dp = w1t_times(w1_ptr, dh, r, c, C, RD, ACC)
        if WEIGHT_GRADS:
            p = tl.load(pooled_ptr + b * C + c, mask=cmask, other=0.0).to(ACC)
            tl.store(dw1_ptr + r[:, None] * C + c[None, :], (dh[:, None] * p[None, :]).to(dw1_ptr.dtype.element_ty),
                     mask=rmask[:, None] & cmask[None, :])
        g, k, mx, mk = pool_grad_coefs(dp, gate_ptr, pool_max_ptr, ties_ptr, b, c, cmask, C, HW, WITH_MAX, ACC)
        input_grad_rows(dy_rows, sdc, sdhw, x_rows, sxc, sxhw, dx_rows, sgc, sghw, g, k, mx, mk,
                        c, cmask, 0, HW, WITH_MAX, BLOCK_HW, ACC)


@triton.jit
def eca_one_launch_backward_kernel(
    dy_ptr, sdb, sdc, sdhw, x_ptr, sxb, sxc, sxhw, dx_ptr, sgb, sgc, sghw,
    w_ptr, gate_ptr, dz_ptr, scratch_ptr, pooled_ptr, dw_ptr, dbias_ptr, C, HW, n_cblocks,
    K: tl.constexpr, CIRCULAR: tl.constexpr, WEIGHT_GRADS: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_C: tl.constexpr, HALO: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr,
):
    """Program (b, channel tile): dz = dgate * g * (1 - g) of its channels and halo (scratch row
    as in the forward), dp[c] = sum_j w[j] dz[c + PAD - j] = sum_j w[j] row[i + K - 1 - j],
    dx = dy * g + dp / HW; dz [B, C] stored for the weight gradient. WEIGHT_GRADS (one sample,
    one tile: the only program) also writes dw[j] = sum_c dz[c] p[c + j - PAD] and dbias."""
    PAD = (K - 1) // 2
    b, c0, row, i, c, cmask = eca_program(scratch_ptr, C, n_cblocks, BLOCK_C, HALO)
    dy_rows, x_rows, dx_rows = dy_ptr + b * sdb, x_ptr + b * sxb, dx_ptr + b * sgb
    s, _, _ = reduce_rows(x_rows, sxc, sxhw, dy_rows, sdc, sdhw, c, c, cmask, HW, True, False, False,
                          BLOCK_C, BLOCK_HW, ACC)
    g = tl.load(gate_ptr + b * C + c, mask=cmask, other=0.0).to(ACC)
    dz = tl.where(cmask, s * g * (1.0 - g), 0.0)
    tl.store(dz_ptr + b * C + c, dz, mask=cmask)
    tl.store(row + PAD + i, dz, mask=cmask)
    if K > 1:
        n = tl.minimum(C - c0, BLOCK_C)
        k = tl.arange(0, HALO)
        below = k < PAD
        hc, hvalid = halo_channels(c0, n, k, C, PAD, CIRCULAR)
        hs, _, _ = reduce_rows(x_rows, sxc, sxhw, dy_rows, sdc, sdhw, hc, hc, hvalid, HW, True, False, False,
                               HALO, BLOCK_HW, ACC)
        hg = tl.load(gate_ptr + b * C + hc, mask=hvalid, other=0.0).to(ACC)
        tl.store(row + tl.where(below, k, n + k), tl.where(hvalid, hs * hg * (1.0 - hg), 0.0), mask=k < 2 * PAD)
    tl.debug_barrier()   # the row's values come from other threads of this program
    dp = tl.zeros([BLOCK_C], dtype=ACC)
    for j in tl.static_range(K):
        dp += tl.load(w_ptr + j).to(ACC) * tl.load(row + i + (K - 1 - j), mask=cmask, other=0.0)
    input_grad_rows(dy_rows, sdc, sdhw, x_rows, sxc, sxhw, dx_rows, sgc, sghw, g, dp / HW, g, g,
                    c, cmask, 0, HW, False, BLOCK_HW, ACC)
    if WEIGHT_GRADS:
        for j in tl.static_range(K):
            idx, valid = _tap(c, j - PAD, C, CIRCULAR)
            pj = tl.load(pooled_ptr + b * C + idx, mask=valid, other=0.0).to(ACC)
            tl.store(dw_ptr + j, tl.sum(dz * pj, axis=0).to(dw_ptr.dtype.element_ty))
        if HAS_BIAS:
            tl.store(dbias_ptr, tl.sum(dz, axis=0).to(dbias_ptr.dtype.element_ty))


# ---- launch plans -----------------------------------------------------------------------

def _is_channels_last(x: ChannelView) -> bool:
    return abs(x.sc) == 1 and abs(x.shw) != 1


@functools.lru_cache(maxsize=4096)
def _tile(block_c: int, HW: int, channels_last: bool) -> tuple[int, int]:
    block_hw = min(next_pow2(HW), max(TILE_ELEMS // block_c, 1))
    if channels_last:   # keep rows of channels long
        block_c = max(block_c, min(TILE_ELEMS // block_hw, 128))
    return block_c, block_hw


def one_launch_tile(x: ChannelView, block_c: int, HW: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_HW) of TILE_ELEMS elements with at least ``block_c`` channels."""
    return _tile(block_c, HW, _is_channels_last(x))


@functools.lru_cache(maxsize=4096)
def _se_tiles(C: int, RD: int, HW: int, channels_last: bool) -> tuple[int, int, int]:
    block_rd = next_pow2(RD)
    return (*_tile(max(min(next_pow2(C), TILE_ELEMS // block_rd, 64), 1), HW, channels_last), block_rd)


def se_tiles(x: ChannelView, C: int, RD: int, HW: int) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_HW, BLOCK_RD) of an SE program: the hidden vector whole, [BLOCK_RD, BLOCK_C]
    weight tiles of at most TILE_ELEMS (plans cached: they are pure functions of the shape)."""
    return _se_tiles(C, RD, HW, _is_channels_last(x))


def eca_tiles(x: ChannelView, K: int, HW: int) -> tuple[int, int, int, int]:
    """(BLOCK_C, BLOCK_HW, HALO, channel tiles) of the ECA programs (cached per shape and plan)."""
    B, C = x.tensor.shape[:2]
    return _eca_tiles(B, C, HW, K, _is_channels_last(x), x.tensor.element_size(),
                      config.device_target_programs(x.tensor.device))


@functools.lru_cache(maxsize=4096)
def _eca_tiles(B: int, C: int, HW: int, K: int, channels_last: bool, itemsize: int, target: int):
    block_c, block_hw = _tile(_eca_tile_c(B, C, HW, K, channels_last, itemsize, target), HW, channels_last)
    return block_c, block_hw, next_pow2(max(K - 1, 1)), cdiv(C, block_c)


def se_fits_one_launch(x: torch.Tensor, w1: torch.Tensor, passes: int = 3) -> bool:
    """SE in one launch when it is forced (``config.one_launch``; ``config.one_launch_backward`` for
    the backward's 4 passes), or when all samples run at once
    (B <= SMs) and one program's bytes (``passes`` over its sample: forward x, x, y; backward dy,
    x, dy, dx; both weights) take one SM no longer than the two launches it saves would
    (``GPUProfile.one_launch_bytes``)."""
    B, C, H, W = x.shape
    forced = config.one_launch_backward if passes > 3 and config.one_launch_backward is not None else \
        config.one_launch
    if B == 0 or forced is not None:
        return B > 0 and bool(forced)
    p = config.device_profile(x.device) or config.PROFILES["h100"]
    per_program = passes * C * H * W * x.element_size() + 2 * w1.numel() * w1.element_size()
    return B <= p.sms and per_program <= p.one_launch_bytes


def eca_fits_one_launch(x: torch.Tensor) -> bool:
    """ECA / CECA in one launch unless forbidden (``config.one_launch = False``) or B = 0: its
    programs run in parallel over (sample, channel tile) at any batch (the cost model has both
    plans: python -m fusedattn.costmodel)."""
    return config.one_launch is not False and x.shape[0] >= 1


def se_one_launch(x: ChannelView, y: ChannelView, shortcut: ChannelView | None, act: int,
                  w1, b1, w2, b2, pooled, pool_max, hidden, gate, mlp_act: int = RELU, gate_fn: int = SIGMOID) -> None:
    """SE forward of every sample, one program each (w1 [RD, C], w2 [C, RD] contiguous; mlp_act,
    gate_fn: activation-table codes)."""
    B, C, H, W = x.tensor.shape
    RD = w1.shape[0]
    block_c, block_hw, block_rd = se_tiles(x, C, RD, H * W)
    r = shortcut if shortcut is not None else x
    with_max = pool_max.numel() > 0
    fast(se_one_launch_kernel)[(B,)](
        x.tensor, x.sb, x.sc, x.shw, y.tensor, y.sb, y.sc, y.shw, r.tensor, r.sb, r.sc, r.shw,
        w1, b1 if b1 is not None else w1, w2, b2 if b2 is not None else w2,
        pooled, pool_max if with_max else pooled, hidden, gate, C, RD, H * W,
        HAS_BIAS=b1 is not None, WITH_MAX=with_max, HAS_RES=shortcut is not None, ACT=act,
        MLP_ACT=mlp_act, GATE=gate_fn, BLOCK_C=block_c, BLOCK_HW=block_hw, BLOCK_RD=block_rd, ACC=acc_dtype(x.tensor.dtype),
        num_warps=STREAM_WARPS,
    )


def eca_tile_c(x: ChannelView, K: int) -> int:
    """Channels per ECA program: halved while the GPU wants more programs and a program still
    streams more than MIN_PROGRAM_BYTES, down to 4 * PAD channels (the halo re-reads at most half
    a tile) and 16 in channels_last (32-byte rows)."""
    B, C, H, W = x.tensor.shape
    return _eca_tile_c(B, C, H * W, K, _is_channels_last(x), x.tensor.element_size(),
                       config.device_target_programs(x.tensor.device))


def _eca_tile_c(B: int, C: int, HW: int, K: int, channels_last: bool, itemsize: int, target: int) -> int:
    pad = (K - 1) // 2
    floor = max(next_pow2(4 * pad), 16 if channels_last else 1)
    row_bytes = HW * itemsize
    block_c = min(eca_block_c(C), 128)
    while block_c > floor and B * cdiv(C, block_c) < target and block_c * row_bytes > MIN_PROGRAM_BYTES:
        block_c //= 2
    return max(block_c, 1)


def eca_one_launch(x: ChannelView, y: ChannelView, shortcut: ChannelView | None, act: int,
                   w, bias, circular: bool, pooled, gate) -> None:
    """ECA / CECA forward, one program per (sample, channel tile); w [K] contiguous."""
    B, C, H, W = x.tensor.shape
    K = w.shape[-1]
    block_c, block_hw, halo, n_cblocks = eca_tiles(x, K, H * W)
    scratch = torch.empty((B * n_cblocks, block_c + halo), dtype=pooled.dtype, device=x.tensor.device)
    r = shortcut if shortcut is not None else x
    fast(eca_one_launch_kernel)[(B * n_cblocks,)](
        x.tensor, x.sb, x.sc, x.shw, y.tensor, y.sb, y.sc, y.shw, r.tensor, r.sb, r.sc, r.shw,
        w, bias if bias is not None else w, pooled, gate, scratch, C, H * W, n_cblocks,
        K=K, CIRCULAR=circular, HAS_BIAS=bias is not None, HAS_RES=shortcut is not None, ACT=act,
        BLOCK_C=block_c, HALO=halo, BLOCK_HW=block_hw, ACC=acc_dtype(x.tensor.dtype),
        num_warps=STREAM_WARPS,
    )


def se_one_launch_backward(dy: ChannelView, x: ChannelView, dx: ChannelView, w1, w2, hidden, gate, pool_max,
                           dz, dh, pooled=None, weight_grads=None, mlp_act: int = RELU,
                           gate_fn: int = SIGMOID) -> None:
    """SE backward of every sample, one program each: dx, and dz [B, C] / dh [B, RD] for the
    weight gradients (w1 [RD, C], w2 [C, RD] contiguous). For B = 1, ``weight_grads`` (dw1 [RD, C],
    db1 [RD] | None, dw2 [C, RD], db2 [C] | None) are written too (from ``pooled``)."""
    B, C, H, W = x.tensor.shape
    RD = w1.shape[0]
    with_max = pool_max.numel() > 0
    block_c, block_hw, block_rd = se_tiles(x, C, RD, H * W)
    ties = torch.empty((B, C), dtype=dz.dtype, device=dz.device) if with_max else gate
    dw1, db1, dw2, db2 = weight_grads if weight_grads is not None else (gate,) * 4
    has_bias = db1 is not None
    fast(se_one_launch_backward_kernel)[(B,)](
        dy.tensor, dy.sb, dy.sc, dy.shw, x.tensor, x.sb, x.sc, x.shw, dx.tensor, dx.sb, dx.sc, dx.shw,
        w1, w2, hidden, gate, pool_max if with_max else gate, dz, dh, ties,
        pooled if pooled is not None else gate, dw1, db1 if has_bias else dw1, dw2, db2 if has_bias else dw2,
        C, RD, H * W, WITH_MAX=with_max, WEIGHT_GRADS=weight_grads is not None, HAS_BIAS=has_bias,
        MLP_ACT=mlp_act, GATE=gate_fn, BLOCK_C=block_c, BLOCK_HW=block_hw, BLOCK_RD=block_rd, ACC=acc_dtype(x.tensor.dtype), num_warps=STREAM_WARPS,
    )


def eca_one_launch_backward(dy: ChannelView, x: ChannelView, dx: ChannelView, w, circular: bool, gate, dz,
                            pooled, dw, db) -> bool:
    """ECA / CECA backward: dx, and dz [B, C] for the weight gradient; w [K] contiguous. When one
    program does it all (one sample, one channel tile) it writes dw [K] and db [1] | None too,
    from ``pooled``, and returns True."""
    B, C, H, W = x.tensor.shape
    K = w.shape[-1]
    block_c, block_hw, halo, n_cblocks = eca_tiles(x, K, H * W)
    scratch = torch.empty((B * n_cblocks, block_c + halo), dtype=dz.dtype, device=dz.device)
    weight_grads = B * n_cblocks == 1
    fast(eca_one_launch_backward_kernel)[(B * n_cblocks,)](
        dy.tensor, dy.sb, dy.sc, dy.shw, x.tensor, x.sb, x.sc, x.shw, dx.tensor, dx.sb, dx.sc, dx.shw,
        w, gate, dz, scratch, pooled, dw, db if db is not None else dw, C, H * W, n_cblocks,
        K=K, CIRCULAR=circular, WEIGHT_GRADS=weight_grads, HAS_BIAS=db is not None,
        BLOCK_C=block_c, HALO=halo, BLOCK_HW=block_hw, ACC=acc_dtype(x.tensor.dtype), num_warps=STREAM_WARPS,
    )
    return weight_grads
