"""Residual epilogue of the channel-gate blocks (SE, ECA) in ResNet-style blocks:

    out = act(x * gate[b, c] + shortcut)          act: an activation-table code

fused into the gate's scale pass (channel_scale with a shortcut and an activation), so the
block output is written once instead of y = x * gate, y + shortcut and act(.) each reading
and writing an activation-sized tensor. Backward starts with the activation's gradient

    dz = dout * act'(z)        (ReLU: from the saved output, out > 0; others: z recomputed
                                from x, gate and the shortcut)

which is also the shortcut's gradient; the gate's backward then runs on dz instead of dout.
"""
import triton
import triton.language as tl

from .channel_pool import PoolPlan
from .channel_scale import scale_grid, scale_tile
from .layout import ChannelView, STREAM_WARPS, acc_dtype
from .activations import RELU_CODE, activation_grad
from .launch import fast

@triton.jit
def epilogue_grad_kernel(
    dout_ptr, sdb, sdc, sdhw,
    out_ptr, sob, soc, sohw,
    x_ptr, sxb, sxc, sxhw,
    res_ptr, srb, src, srhw,
    dz_ptr, szb, szc, szhw,
    gate_ptr, b0, C, HW, n_hwblocks, n_cblocks,
    ACT: tl.constexpr, HAS_RES: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ACC: tl.constexpr,
):
    b, c, hw, mask = scale_tile(tl.program_id(0), b0, C, HW, n_hwblocks, n_cblocks, BLOCK_C, BLOCK_HW)
    cc, hh = c[:, None], hw[None, :]
    d = tl.load(dout_ptr + b * sdb + cc * sdc + hh * sdhw, mask=mask, other=0.0, eviction_policy="evict_first").to(ACC)
    if ACT == RELU_CODE:
        y = tl.load(out_ptr + b * sob + cc * soc + hh * sohw, mask=mask, other=0.0,
                    eviction_policy="evict_first").to(ACC)
        d = activation_grad(d, y, RELU_CODE)   # the output is <= 0 exactly where its input is
    elif ACT != 0:
        g = tl.load(gate_ptr + b * C + c, mask=c < C, other=0.0).to(ACC)
        z = tl.load(x_ptr + b * sxb + cc * sxc + hh * sxhw, mask=mask, other=0.0,
                    eviction_policy="evict_last").to(ACC) * g[:, None]
        if HAS_RES:
            z += tl.load(res_ptr + b * srb + cc * src + hh * srhw, mask=mask, other=0.0,
                         eviction_policy="evict_first").to(ACC)
        d = activation_grad(d, z, ACT)
    tl.store(dz_ptr + b * szb + cc * szc + hh * szhw, d.to(dz_ptr.dtype.element_ty), mask=mask,
             eviction_policy="evict_last")


def epilogue_grad(dout: ChannelView, out: ChannelView | None, x: ChannelView, shortcut: ChannelView | None,
                  dz: ChannelView, gate, act: int, plan: PoolPlan, b0: int, nb: int) -> None:
    """dz = dout * act'(x * gate + shortcut) for samples [b0, b0 + nb); ``out`` (the forward's
    output) is read for ReLU, x and the shortcut for the others."""
    _, C, H, W = x.tensor.shape
    grid, n_hw = scale_grid(plan, nb, H * W)
    o = out if out is not None else dout
    r = shortcut if shortcut is not None else x
    fast(epilogue_grad_kernel)[grid](
        dout.tensor, dout.sb, dout.sc, dout.shw, o.tensor, o.sb, o.sc, o.shw,
        x.tensor, x.sb, x.sc, x.shw, r.tensor, r.sb, r.sc, r.shw, dz.tensor, dz.sb, dz.sc, dz.shw,
        gate, b0, C, H * W, n_hw, plan.n_cblocks, ACT=act, HAS_RES=shortcut is not None,
        BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw, ACC=acc_dtype(x.tensor.dtype), num_warps=STREAM_WARPS,
    )
