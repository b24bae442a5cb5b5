"""ECA as one opaque op:  y = act(x * sigmoid(conv1d_k(mean_hw(x)) across channels) + shortcut)
(the residual epilogue is optional: act none and no shortcut give plain ECA)

``fusedattn::eca_forward`` / ``fusedattn::eca_backward``: torch.library custom ops with
fake impls and registered autograd. CUDA tensors run the Triton kernels
(fusedattn.kernels.eca); CPU tensors the plain-PyTorch math below.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import kernels
from ..backend import uses_triton
from ..kernels.layout import suggested_memory_format
from .cpu_math import eca_math
from .epilogue import (act_code, check_shortcut, epilogue_grad_torch, epilogue_saved, epilogue_torch,
                       shortcut_grad)
from .registration import define_block
from .validation import acc_dtype, check_activation, check_param


# ---- plain-PyTorch path (CPU) -------------------------------------------------------

def _channel_conv(v, weight, circular):
    """z[b, c] = sum_j w[j] * v[b, c + j - pad], zero or circular padding; v [B, C]."""
    k = weight.shape[-1]
    pad = (k - 1) // 2
    v = v[:, None, :]
    if circular:
        idx = torch.arange(-pad, v.shape[-1] + pad, device=v.device) % v.shape[-1]
        return F.conv1d(v[..., idx], weight.reshape(1, 1, k))[:, 0]
    return F.conv1d(v, weight.reshape(1, 1, k), padding=pad)[:, 0]


def eca_forward_torch(x, weight, bias, circular, shortcut=None, act=0):
    dt = acc_dtype(x)
    pooled = x.mean((2, 3), dtype=dt)
    z = _channel_conv(pooled, weight.to(dt), circular)
    if bias is not None:
        z = z + bias.to(dt)
    gate = torch.sigmoid(z)
    y = epilogue_torch(x.to(dt) * gate[:, :, None, None], shortcut, act).to(x.dtype)
    return y.contiguous(memory_format=suggested_memory_format(x)), pooled, gate


def eca_backward_torch(dy, x, weight, has_bias, circular, pooled, gate, act=0, out=None, shortcut=None):
    B, C, H, W = x.shape
    k = weight.shape[-1]
    dt = gate.dtype
    fmt = suggested_memory_format(x)
    dy = epilogue_grad_torch(dy, out, x, gate, shortcut, act)
    dgate = (dy * x.to(dt)).sum((2, 3))
    dz = dgate * gate * (1 - gate)
    dp = _channel_conv(dz, weight.to(dt).flip(-1), circular)  # the conv's adjoint
    dx = dy.to(dt) * gate[:, :, None, None] + (dp / (H * W))[:, :, None, None]
    pad = (k - 1) // 2
    if circular:
        idx = torch.arange(-pad, C + pad, device=x.device) % C
        padded = pooled[:, idx]
    else:
        padded = F.pad(pooled, (pad, pad))
    dw = torch.stack([(dz * padded[:, j:j + C]).sum() for j in range(k)])
    db = dz.sum().reshape(1).to(weight.dtype) if has_bias else None
    dres = dy.to(x.dtype).contiguous(memory_format=fmt) if act else None
    return dx.to(x.dtype).contiguous(memory_format=fmt), dw.to(weight.dtype).reshape(weight.shape), db, dres


# ---- custom ops ----------------------------------------------------------------------

def eca_forward_impl(x: Tensor, weight: Tensor, bias: Tensor | None, circular: bool, shortcut: Tensor | None,
                     act: int) -> tuple[Tensor, Tensor, Tensor]:
    """(y = act(x * gate + shortcut), pooled [B, C], gate [B, C])."""
    impl = kernels.eca_forward if uses_triton(x) else eca_forward_torch
    return impl(x, weight, bias, circular, shortcut, act)


def eca_backward_impl(dy: Tensor, x: Tensor, weight: Tensor, has_bias: bool, circular: bool,
                      pooled: Tensor, gate: Tensor, act: int, out: Tensor | None, shortcut: Tensor | None
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias, dz); dbias None without bias, dz (the shortcut's gradient
    dy * act'(.)) None without an activation."""
    impl = kernels.eca_backward if uses_triton(x) else eca_backward_torch
    return impl(dy, x, weight, has_bias, circular, pooled, gate, act, out, shortcut)


def _setup_context(ctx, inputs, output):
    x, weight, bias, circular, shortcut, act = inputs
    y, pooled, gate = output
    ctx.has_bias, ctx.circular, ctx.act = bias is not None, circular, act
    ctx.save_for_backward(x, weight, pooled, gate, *epilogue_saved(y, shortcut, act))


def _gradients(ctx, run, dy, *_unused):
    x, weight, pooled, gate, out, shortcut = ctx.saved_tensors
    dx, dw, db, dres = run(dy, x, weight, ctx.has_bias, ctx.circular, pooled, gate, ctx.act, out, shortcut)
    return dx, dw, db, None, shortcut_grad(ctx, dy, dres), None


eca_block = define_block("eca", eca_forward_impl, eca_backward_impl, _setup_context, _gradients, eca_forward_torch,
                         eca_math, kernels_only=True)


# ---- functional API ------------------------------------------------------------------

def eca(x: Tensor, weight: Tensor, bias: Tensor | None = None, circular: bool = False,
        shortcut: Tensor | None = None, act=None) -> Tensor:
    """Efficient Channel Attention on x [B, C, H, W] with a Conv1d weight [1, 1, k] (k odd):
    act(x * gate + shortcut).

    circular=True wraps the channel axis around (timm's CecaModule) instead of zero padding.
    Residual epilogue (one fused pass): shortcut [B, C, H, W] (x's dtype) added, then act
    (None, 'relu' or 'silu').
    """
    check_activation(x)
    C = x.shape[1]
    if not isinstance(weight, torch.Tensor) or weight.dim() != 3 or weight.shape[:2] != (1, 1):
        raise ValueError(f"weight must be a Conv1d(1, 1, k) weight of shape [1, 1, k], got "
                         f"{tuple(getattr(weight, 'shape', ()))}")
    k = weight.shape[-1]
    if k % 2 == 0:
        raise ValueError(f"weight's kernel size must be odd, got {k}")
    check_param(weight, "weight", x)
    check_param(bias, "bias", x, (1,))
    if circular and (k - 1) // 2 > C:
        raise ValueError(f"circular padding {(k - 1) // 2} is larger than the {C} channels of x")
    check_shortcut(x, shortcut)
    return eca_block(x, weight, bias, bool(circular), shortcut, act_code(act))
