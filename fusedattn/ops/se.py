"""SE as one opaque op:  y = act(x * gate(fc2(mlp_act(fc1(pool(x))))) + shortcut)
(mlp_act and gate: activation-table codes, ops/activations.py; the residual epilogue is optional:
act none and no shortcut give plain SE). Without fc2 (w2 None) the gate has one layer:
gate(fc1(pool(x))), fc1 [C, C] (timm's EffectiveSEModule, Ultralytics' ChannelAttention).

``fusedattn::se_forward`` / ``fusedattn::se_backward`` are ``torch.library`` custom ops
with fake impls and registered autograd, so ``torch.compile(fullgraph=True)`` keeps
each SE block as one node. CUDA tensors run the Triton kernels (fusedattn.kernels.se);
CPU tensors run the plain-PyTorch math below, which mirrors the kernels step by step.
"""
import torch.nn.functional as F
from torch import Tensor

from .. import kernels
from ..backend import uses_triton
from ..kernels.activations import RELU, SIGMOID
from .activations import activation, activation_grad, code_arg, gate_grad
from .cpu_math import se_math
from ..kernels.layout import suggested_memory_format
from .epilogue import (act_code, check_shortcut, epilogue_grad_torch, epilogue_saved, epilogue_torch,
                       shortcut_grad)
from .registration import define_block
from .validation import acc_dtype, as_dtype, check_activation, check_channel_mlp, in_layout_of


# ---- plain-PyTorch path (CPU) -------------------------------------------------------

def _channel_layer(v, w, b, dt):
    """v [B, in] through weights w [out, in] (Linear) or [out, in, 1, 1] (run as the 1x1 conv it is, as
    the CPU route does, ops/cpu_math.se_math: the same rounding in eager and compiled CPU runs)."""
    if w.dim() == 4:
        return F.conv2d(v.view(v.shape[0], -1, 1, 1), as_dtype(w, dt), as_dtype(b, dt)).flatten(1)
    return F.linear(v, as_dtype(w, dt), as_dtype(b, dt))


def se_forward_torch(x, w1, b1, w2, b2, add_maxpool, shortcut=None, act=0, mlp_act=RELU, gate_fn=SIGMOID):
    B, C = x.shape[:2]
    dt = acc_dtype(x)
    pooled = x.mean((2, 3), dtype=dt)
    if add_maxpool:
        pool_max = x.amax((2, 3)).to(dt)
        pooled = 0.5 * pooled + 0.5 * pool_max
    else:
        pool_max = pooled.new_empty((0,))
    hidden = _channel_layer(pooled, w1, b1, dt)
    if w2 is None:   # one layer: the logits are the gate's input; no hidden vector is kept
        gate, hidden = activation(hidden, gate_fn), hidden.new_empty((B, 0))
    else:
        gate = activation(_channel_layer(activation(hidden, mlp_act), w2, b2, dt), gate_fn)
    y = epilogue_torch(as_dtype(x, dt) * gate.view(B, C, 1, 1), shortcut, act)
    return in_layout_of(x, y), pooled, pool_max, hidden, gate


def se_backward_torch(dy, x, w1, w2, has_bias, pooled, pool_max, hidden, gate, act=0, out=None, shortcut=None,
                      mlp_act=RELU, gate_fn=SIGMOID):
    B, C, H, W = x.shape
    RD = w1.shape[0]
    dt = gate.dtype
    fmt = suggested_memory_format(x)
    xf, dyf = x.to(dt), epilogue_grad_torch(dy, out, x, gate, shortcut, act)
    dgate = (dyf * xf).sum((2, 3))
    dz = gate_grad(dgate, gate, gate_fn)
    dh = dz if w2 is None else activation_grad(dz @ w2.reshape(C, RD).to(dt), hidden, mlp_act)
    dp = dh @ w1.reshape(RD, C).to(dt)
    if pool_max.numel():
        at_max = xf == pool_max[:, :, None, None]
        ties = at_max.sum((2, 3)).to(dt)
        dx = dyf * gate[:, :, None, None] + (0.5 * dp / (H * W))[:, :, None, None] \
            + at_max * (0.5 * dp / ties)[:, :, None, None]
    else:
        dx = dyf * gate[:, :, None, None] + (dp / (H * W))[:, :, None, None]
    dw1 = (dh.t() @ pooled).to(w1.dtype).reshape(w1.shape)
    db1 = dh.sum(0).to(w1.dtype) if has_bias else None
    if w2 is None:
        dw2 = db2 = None
    else:
        dw2 = (dz.t() @ activation(hidden, mlp_act)).to(w2.dtype).reshape(w2.shape)
        db2 = dz.sum(0).to(w2.dtype) if has_bias else None
    dres = dyf.to(x.dtype).contiguous(memory_format=fmt) if act else None
    return dx.to(x.dtype).contiguous(memory_format=fmt), dw1, db1, dw2, db2, dres


# ---- custom ops ----------------------------------------------------------------------

def se_forward_impl(x: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor | None, b2: Tensor | None,
                    add_maxpool: bool, shortcut: Tensor | None, act: int, mlp_act: int,
                    gate_fn: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(y = act(x * gate + shortcut), pooled [B,C], pool_max [B,C] or [0], hidden [B,RD] ([B,0] with one
    layer), gate [B,C])."""
    impl = kernels.se_forward if uses_triton(x) else se_forward_torch
    return impl(x, w1, b1, w2, b2, add_maxpool, shortcut, act, mlp_act, gate_fn)


def se_backward_impl(dy: Tensor, x: Tensor, w1: Tensor, w2: Tensor | None, has_bias: bool, pooled: Tensor,
                     pool_max: Tensor, hidden: Tensor, gate: Tensor, act: int, out: Tensor | None,
                     shortcut: Tensor | None, mlp_act: int, gate_fn: int
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dx, dw1, db1, dw2, db2, dz); db1/db2 None without bias, dw2/db2 without w2. dz = dy * act'(.)
    is the shortcut's gradient; None without an activation (then it is dy)."""
    impl = kernels.se_backward if uses_triton(x) else se_backward_torch
    return impl(dy, x, w1, w2, has_bias, pooled, pool_max, hidden, gate, act, out, shortcut, mlp_act, gate_fn)


def _setup_context(ctx, inputs, output):
    x, w1, b1, w2, b2, add_maxpool, shortcut, act, mlp_act, gate_fn = inputs
    y, pooled, pool_max, hidden, gate = output
    ctx.has_bias, ctx.act, ctx.mlp_act, ctx.gate_fn = b1 is not None, act, mlp_act, gate_fn
    ctx.save_for_backward(x, w1, w2, pooled, pool_max, hidden, gate, *epilogue_saved(y, shortcut, act))


def _gradients(ctx, run, dy, *_unused):
    x, w1, w2, pooled, pool_max, hidden, gate, out, shortcut = ctx.saved_tensors
    dx, dw1, db1, dw2, db2, dres = run(dy, x, w1, w2, ctx.has_bias, pooled, pool_max, hidden, gate,
                                       ctx.act, out, shortcut, ctx.mlp_act, ctx.gate_fn)
    return dx, dw1, db1, dw2, db2, None, shortcut_grad(ctx, dy, dres), None, None, None


se_block = define_block("se", se_forward_impl, se_backward_impl, _setup_context, _gradients, se_forward_torch,
                        se_math, kernels_only=True)


# ---- functional API ------------------------------------------------------------------

def se(x: Tensor, fc1_weight: Tensor, fc1_bias: Tensor | None, fc2_weight: Tensor | None,
       fc2_bias: Tensor | None, add_maxpool: bool = False, shortcut: Tensor | None = None, act=None,
       mlp_act="relu", gate="sigmoid") -> Tensor:
    """Squeeze-and-Excitation on x [B, C, H, W]: act(x * gate(fc2(mlp_act(fc1(pool))) + shortcut).

    fc1_weight [RD, C, 1, 1] or [RD, C], fc2_weight [C, RD, 1, 1] or [C, RD]; biases [RD] and
    [C], both given or both None. fc2_weight None: the one-layer gate gate(fc1(pool)), fc1_weight
    [C, C(, 1, 1)], fc1_bias [C] or None, fc2_bias None. add_maxpool pools 0.5 * mean + 0.5 * max (timm's option).
    Residual epilogue (one fused pass): shortcut [B, C, H, W] (x's dtype) added, then act
    (None, 'relu' or 'silu'), as ResNet blocks do right after the attention. mlp_act: a name of the
    activation table (relu, silu, relu6, leaky_relu, gelu, gelu_tanh, hardswish, ...); gate: 'sigmoid'
    or 'hard_sigmoid'.
    """
    check_activation(x)
    check_channel_mlp(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    check_shortcut(x, shortcut)
    return se_block(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, bool(add_maxpool), shortcut, act_code(act),
                    code_arg(mlp_act, "mlp_act"), code_arg(gate, "gate", gate=True))
