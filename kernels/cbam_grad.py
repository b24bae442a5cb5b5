"""CBAM backward passes over x-sized tensors that follow the spatial gate's backward.

With x1 = x * ca[b, c] and y = x1 * sa[b, hw], the gradient reaching x1 is

    dx1 = dy * sa + k_mean[b, hw] + (x1 == maxmap[b, hw]) * k_max[b, hw]

(k_mean = dmap_mean / C, k_max = dmap_max / #channel ties, from the spatial backward).
It is never stored: both kernels recompute it from dy and x.

  cbam_channel_grad_kernel: per-(b, c) partials over H*W of dx1 * x (-> dca) and of
      #(x == max_hw x) (ties of the channel max pool); same split plan as channel_pool.
  cbam_input_grad_kernel: dx = dx1 * ca + mean_coef[b, c] + (x == pool_max) * max_coef[b, c].
CHANNEL_MAX False (Ultralytics' CBAM: a one-layer channel gate on the mean alone): no channel
max pool, so neither the ties partials nor the max term.
"""
import triton
import triton.language as tl

from .channel_pool import PoolPartials, PoolPlan, pool_slab
from .channel_scale import scale_grid, scale_tile
from .layout import ChannelView, STREAM_WARPS, acc_dtype
from .nan_math import max_grad
from .launch import fast


@triton.jit
def _dx1(dy, v, b, hw, HW, sa_ptr, kmean_ptr, maps_ptr, kmax_ptr, ACC: tl.constexpr):
    """dL/dx1 on a [BLOCK_C, BLOCK_HW] tile from dy, x1 = v and the per-pixel vectors."""
    hm = hw < HW
    sa = tl.load(sa_ptr + b * HW + hw, mask=hm, other=0.0).to(ACC)
    km = tl.load(kmean_ptr + b * HW + hw, mask=hm, other=0.0).to(ACC)
    mx = tl.load(maps_ptr + (2 * b + 1) * HW + hw, mask=hm, other=0.0).to(ACC)
    kx = tl.load(kmax_ptr + b * HW + hw, mask=hm, other=0.0).to(ACC)
    return dy * sa[None, :] + km[None, :] + max_grad(kx[None, :], v == mx[None, :])


@triton.jit
def cbam_channel_grad_kernel(
    x_ptr, sxb, sxc, sxhw,
    dy_ptr, sdb, sdc, sdhw,
    ca_ptr, pmax_ptr, sa_ptr, kmean_ptr, maps_ptr, kmax_ptr,
    sum_ptr, cnt_ptr,
    b0, B, C, HW, hw_per_split, n_cblocks,
    CHANNEL_MAX: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr,
):
    b, c, split, hw_start, hw_end = pool_slab(b0, C, HW, hw_per_split, n_cblocks, BLOCK_C)
    cmask = c < C
    c64 = c.to(tl.int64)[:, None]
    g = tl.load(ca_ptr + b * C + c, mask=cmask, other=0.0).to(ACC)
    if CHANNEL_MAX:
        pm = tl.load(pmax_ptr + b * C + c, mask=cmask, other=0.0).to(ACC)
    acc = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    cnt = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    for hw0 in range(hw_start, hw_end, BLOCK_HW):
        hw = hw0 + tl.arange(0, BLOCK_HW)
        m = cmask[:, None] & (hw < hw_end)[None, :]
        hw64 = hw.to(tl.int64)[None, :]
        x = tl.load(x_ptr + b * sxb + c64 * sxc + hw64 * sxhw, mask=m, other=0.0, eviction_policy="evict_last").to(ACC)
        dy = tl.load(dy_ptr + b * sdb + c64 * sdc + hw64 * sdhw, mask=m, other=0.0,
                     eviction_policy="evict_last").to(ACC)
        dx1 = _dx1(dy, x * g[:, None], b, hw, HW, sa_ptr, kmean_ptr, maps_ptr, kmax_ptr, ACC)
        acc += tl.where(m, dx1 * x, 0.0)
        if CHANNEL_MAX:
            cnt += tl.where(m & (x == pm[:, None]), 1.0, 0.0)
    out = (split * B + b) * C + c
    tl.store(sum_ptr + out, tl.sum(acc, axis=1), mask=cmask)
    if CHANNEL_MAX:
        tl.store(cnt_ptr + out, tl.sum(cnt, axis=1), mask=cmask)


@triton.jit
def cbam_input_grad_kernel(
    dy_ptr, sdb, sdc, sdhw,
    x_ptr, sxb, sxc, sxhw,
    dx_ptr, sgb, sgc, sghw,
    ca_ptr, pmax_ptr, mean_coef_ptr, max_coef_ptr, sa_ptr, kmean_ptr, maps_ptr, kmax_ptr,
    b0, C, HW, n_hwblocks, n_cblocks,
    CHANNEL_MAX: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr,
):
    b, c, hw, mask = scale_tile(tl.program_id(0), b0, C, HW, n_hwblocks, n_cblocks, BLOCK_C, BLOCK_HW)
    cm = c < C
    g = tl.load(ca_ptr + b * C + c, mask=cm, other=0.0).to(ACC)
    k = tl.load(mean_coef_ptr + b * C + c, mask=cm, other=0.0).to(ACC)
    x = tl.load(x_ptr + b * sxb + c[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0,
                eviction_policy="evict_first").to(ACC)
    dy = tl.load(dy_ptr + b * sdb + c[:, None] * sdc + hw[None, :] * sdhw, mask=mask, other=0.0,
                 eviction_policy="evict_first").to(ACC)
    dx1 = _dx1(dy, x * g[:, None], b, hw, HW, sa_ptr, kmean_ptr, maps_ptr, kmax_ptr, ACC)
    dx = dx1 * g[:, None] + k[:, None]
    if CHANNEL_MAX:
        pm = tl.load(pmax_ptr + b * C + c, mask=cm, other=0.0).to(ACC)
        kx = tl.load(max_coef_ptr + b * C + c, mask=cm, other=0.0).to(ACC)
        dx += max_grad(kx[:, None], x == pm[:, None])
    tl.store(dx_ptr + b * sgb + c[:, None] * sgc + hw[None, :] * sghw, dx.to(dx_ptr.dtype.element_ty),
             mask=mask, eviction_policy="evict_first")


def cbam_channel_grad(x: ChannelView, dy: ChannelView, plan: PoolPlan, parts: PoolPartials,
                      b0: int, nb: int, ca, pool_max, sa, k_mean, maps, k_max) -> None:
    """pool_max None: no channel max pool (parts without counts)."""
    B, C, H, W = x.tensor.shape
    channel_max = pool_max is not None
    fast(cbam_channel_grad_kernel)[(nb * plan.n_cblocks, plan.n_splits)](
        x.tensor, x.sb, x.sc, x.shw, dy.tensor, dy.sb, dy.sc, dy.shw,
        ca, pool_max if channel_max else ca, sa, k_mean, maps, k_max, parts.sums,
        parts.counts if channel_max else parts.sums,
        b0, B, C, H * W, plan.hw_per_split, plan.n_cblocks, CHANNEL_MAX=channel_max,
        BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw, ACC=acc_dtype(x.tensor.dtype), num_warps=STREAM_WARPS,
    )


def cbam_input_grad(dy: ChannelView, x: ChannelView, dx: ChannelView, plan: PoolPlan, b0: int, nb: int,
                    ca, pool_max, mean_coef, max_coef, sa, k_mean, maps, k_max) -> None:
    """pool_max and max_coef None: no channel max pool."""
    _, C, H, W = x.tensor.shape
    grid, n_hw = scale_grid(plan, nb, H * W)
    channel_max = pool_max is not None
    fast(cbam_input_grad_kernel)[grid](
        dy.tensor, dy.sb, dy.sc, dy.shw, x.tensor, x.sb, x.sc, x.shw, dx.tensor, dx.sb, dx.sc, dx.shw,
        ca, pool_max if channel_max else ca, mean_coef, max_coef if channel_max else mean_coef, sa, k_mean, maps,
        k_max, b0, C, H * W, n_hw, plan.n_cblocks, CHANNEL_MAX=channel_max,
        BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw, ACC=acc_dtype(x.tensor.dtype), num_warps=STREAM_WARPS,
    )
