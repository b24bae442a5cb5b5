"""y[b, c, hw] = act(x[b, c, hw] * gate[b, c] [* spatial[b, hw]] [+ shortcut[b, c, hw]])  and the
input gradient of the channel-only form

    dx[b, c, hw] = dy * gate[b, c] + mean_coef[b, c] + (x == max[b, c]) * max_coef[b, c]

where ``mean_coef = dpool_mean / HW`` and ``max_coef = dpool_max / #ties`` come from the
gate's backward (the max term only when the block pools the maximum too; without it,
dx needs no read of x).

One program handles one [BLOCK_C, BLOCK_HW] tile; programs are numbered HW-tile-fastest
so neighbours in time touch neighbouring memory.
"""
import triton
import triton.language as tl

from .channel_pool import PoolPlan
from .layout import ChannelView, STREAM_WARPS, acc_dtype, cdiv
from .activations import activation
from .nan_math import max_grad
from .launch import fast

@triton.jit
def scale_tile(pid, b0, C, HW, n_hwblocks, n_cblocks, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    hwb = pid % n_hwblocks
    rest = pid // n_hwblocks
    b = (b0 + rest // n_cblocks).to(tl.int64)
    c = (rest % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    hw = hwb * BLOCK_HW + tl.arange(0, BLOCK_HW)
    mask = (c < C)[:, None] & (hw < HW)[None, :]
    return b, c.to(tl.int64), hw.to(tl.int64), mask


@triton.jit
def channel_scale_kernel(
    x_ptr, sxb, sxc, sxhw,
    y_ptr, syb, syc, syhw,
    res_ptr, srb, src, srhw,
    gate_ptr, spatial_ptr,
    b0, C, HW, n_hwblocks, n_cblocks,
    HAS_SPATIAL: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr,
):
    b, c, hw, mask = scale_tile(tl.program_id(0), b0, C, HW, n_hwblocks, n_cblocks, BLOCK_C, BLOCK_HW)
    g = tl.load(gate_ptr + b * C + c, mask=c < C, other=0.0).to(ACC)
    x = tl.load(x_ptr + b * sxb + c[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0,
                eviction_policy="evict_first")
    y = x.to(ACC) * g[:, None]
    if HAS_SPATIAL:
        y *= tl.load(spatial_ptr + b * HW + hw, mask=hw < HW, other=0.0).to(ACC)[None, :]
    if HAS_RES:
        y += tl.load(res_ptr + b * srb + c[:, None] * src + hw[None, :] * srhw, mask=mask, other=0.0,
                     eviction_policy="evict_first").to(ACC)
    y = activation(y, ACT)
    tl.store(y_ptr + b * syb + c[:, None] * syc + hw[None, :] * syhw,
             y.to(y_ptr.dtype.element_ty), mask=mask, eviction_policy="evict_first")


@triton.jit
def channel_scale_backward_kernel(
    dy_ptr, sdb, sdc, sdhw,
    x_ptr, sxb, sxc, sxhw,
    dx_ptr, sgb, sgc, sghw,
    gate_ptr, mean_coef_ptr, max_ptr, max_coef_ptr,
    b0, C, HW, n_hwblocks, n_cblocks,
    WITH_MAX: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr,
):
    b, c, hw, mask = scale_tile(tl.program_id(0), b0, C, HW, n_hwblocks, n_cblocks, BLOCK_C, BLOCK_HW)
    cm = c < C
    vec = b * C + c
    g = tl.load(gate_ptr + vec, mask=cm, other=0.0).to(ACC)
    k = tl.load(mean_coef_ptr + vec, mask=cm, other=0.0).to(ACC)
    dy = tl.load(dy_ptr + b * sdb + c[:, None] * sdc + hw[None, :] * sdhw, mask=mask, other=0.0,
                 eviction_policy="evict_first")
    dx = dy.to(ACC) * g[:, None] + k[:, None]
    if WITH_MAX:
        mx = tl.load(max_ptr + vec, mask=cm, other=0.0).to(ACC)
        mk = tl.load(max_coef_ptr + vec, mask=cm, other=0.0).to(ACC)
        x = tl.load(x_ptr + b * sxb + c[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0,
                    eviction_policy="evict_first")
        dx += max_grad(mk[:, None], x.to(ACC) == mx[:, None])
    tl.store(dx_ptr + b * sgb + c[:, None] * sgc + hw[None, :] * sghw,
             dx.to(dx_ptr.dtype.element_ty), mask=mask, eviction_policy="evict_first")


def scale_grid(plan: PoolPlan, nb: int, HW: int) -> tuple[tuple[int], int]:
    n_hw = cdiv(HW, plan.block_hw)
    return (nb * plan.n_cblocks * n_hw,), n_hw


def channel_scale(x: ChannelView, y: ChannelView, gate, plan: PoolPlan, b0: int, nb: int,
                  spatial=None, shortcut: ChannelView | None = None, act: int = 0) -> None:
    """y = act(x * gate[:, :, None, None] (* spatial[:, None]) (+ shortcut)) for samples
    [b0, b0 + nb); gate is [B, C], spatial (optional) [B, H*W], act an activation-table code."""
    _, C, H, W = x.tensor.shape
    grid, n_hw = scale_grid(plan, nb, H * W)
    r = shortcut if shortcut is not None else x
    fast(channel_scale_kernel)[grid](
        x.tensor, x.sb, x.sc, x.shw, y.tensor, y.sb, y.sc, y.shw, r.tensor, r.sb, r.sc, r.shw, gate,
        spatial if spatial is not None else gate,
        b0, C, H * W, n_hw, plan.n_cblocks, HAS_SPATIAL=spatial is not None,
        HAS_RES=shortcut is not None, ACT=act,
        BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw, ACC=acc_dtype(x.tensor.dtype), num_warps=STREAM_WARPS,
    )


def channel_scale_backward(dy: ChannelView, x: ChannelView, dx: ChannelView, gate, mean_coef,
                           plan: PoolPlan, b0: int, nb: int, pool_max=None, max_coef=None) -> None:
    """dx for samples [b0, b0 + nb); every vector argument is [B, C]."""
    _, C, H, W = x.tensor.shape
    grid, n_hw = scale_grid(plan, nb, H * W)
    with_max = pool_max is not None
    fast(channel_scale_backward_kernel)[grid](
        dy.tensor, dy.sb, dy.sc, dy.shw, x.tensor, x.sb, x.sc, x.shw,
        dx.tensor, dx.sb, dx.sc, dx.shw,
        gate, mean_coef, pool_max if with_max else gate, max_coef if with_max else gate,
        b0, C, H * W, n_hw, plan.n_cblocks,
        WITH_MAX=with_max,
        BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw, ACC=acc_dtype(x.tensor.dtype), num_warps=STREAM_WARPS,
    )
