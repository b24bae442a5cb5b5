"""CBAM as one opaque op:

    ca = sigmoid(mlp(mean_hw x) + mlp(max_hw x));  x1 = x * ca
    sa = sigmoid(BN(conv([mean_c x1, max_c x1])));  y = x1 * sa

``fusedattn::cbam_forward`` / ``fusedattn::cbam_backward``: torch.library custom ops with fake
impls and registered autograd. The passes over x and the spatial gate on the small maps run
as Triton kernels on CUDA (fusedattn.kernels.cbam, fusedattn.kernels.spatial_gate) and as the
plain-PyTorch functions below and in ops/spatial_gate.py on CPU. Saved for backward: x and
vectors of size B*C, B*H*W and the BatchNorm statistics the forward used (no x-sized
intermediate).
"""
import types

import torch
from torch import Tensor

from .. import kernels
from ..backend import uses_triton
from ..kernels.layout import suggested_memory_format
from .cpu_math import cbam_math
from .registration import define_block
from .spatial_gate import SpatialParams, spatial_gate_backward, spatial_gate_forward
from .validation import acc_dtype, check_activation, check_channel_mlp, check_param


# ---- plain-PyTorch path (CPU): the same four stages as fusedattn.kernels.cbam ------------

def _mlp_logits(pooled, w1, b1, w2, b2):
    """(hidden pre-ReLU, logits) of the channel MLP on the pooled rows; w2 None: the one-layer gate
    (hidden [N, 0], logits fc1(pooled))."""
    RD, C = w1.shape[0], pooled.shape[1]
    hidden = pooled @ w1.reshape(RD, C).to(pooled.dtype).t()
    if b1 is not None:
        hidden = hidden + b1.to(pooled.dtype)
    if w2 is None:
        return pooled.new_empty((pooled.shape[0], 0)), hidden
    z = hidden.relu() @ w2.reshape(C, RD).to(pooled.dtype).t()
    if b2 is not None:
        z = z + b2.to(pooled.dtype)
    return hidden, z


def cbam_channel_forward_torch(x, w1, b1, w2, b2):
    B = x.shape[0]
    dt = acc_dtype(x)
    mean = x.mean((2, 3), dtype=dt)
    pooled = mean if w2 is None else torch.cat([mean, x.amax((2, 3)).to(dt)])   # Ultralytics: the mean alone
    hidden, z = _mlp_logits(pooled, w1, b1, w2, b2)
    ca = torch.sigmoid(z if w2 is None else z[:B] + z[B:])
    x1 = x.to(dt) * ca[:, :, None, None]
    return ca, pooled, hidden, torch.stack([x1.mean(1), x1.amax(1)], 1)


def cbam_apply_torch(x, ca, sa):
    y = x.to(ca.dtype) * ca[:, :, None, None] * sa
    return y.to(x.dtype).contiguous(memory_format=suggested_memory_format(x))


def cbam_spatial_grad_inputs_torch(dy, x, ca, maps):
    x1 = x.to(ca.dtype) * ca[:, :, None, None]
    return ((dy.to(ca.dtype) * x1).sum(1, keepdim=True),
            (x1 == maps[:, 1:2]).sum(1, keepdim=True).to(ca.dtype))


def cbam_channel_backward_torch(dy, x, w1, w2, has_bias, ca, pooled, hidden, maps, sa, k_mean, k_max):
    B, C, H, W = x.shape
    RD = w1.shape[0]
    dt = ca.dtype
    xf = x.to(dt)
    x1 = xf * ca[:, :, None, None]
    dx1 = dy.to(dt) * sa + k_mean + (x1 == maps[:, 1:2]) * k_max
    dv = (dx1 * xf).sum((2, 3)) * ca * (1 - ca)
    fmt = suggested_memory_format(x)
    if w2 is None:   # one layer on the mean
        dx = dx1 * ca[:, :, None, None] + (dv @ w1.reshape(C, C).to(dt) / (H * W))[:, :, None, None]
        dw1 = (dv.t() @ pooled).to(w1.dtype).reshape(w1.shape)
        return (dx.to(x.dtype).contiguous(memory_format=fmt), dw1, dv.sum(0).to(w1.dtype) if has_bias else None,
                None, None)
    t = dv @ w2.reshape(C, RD).to(dt)
    dh = torch.cat([t, t]) * (hidden > 0)
    dpool = dh @ w1.reshape(RD, C).to(dt)
    at_max = xf == pooled[B:, :, None, None]
    dx = dx1 * ca[:, :, None, None] + (dpool[:B] / (H * W))[:, :, None, None] \
        + at_max * (dpool[B:] / at_max.sum((2, 3)))[:, :, None, None]
    dv2 = torch.cat([dv, dv])
    dw2 = (dv2.t() @ hidden.relu()).to(w2.dtype).reshape(w2.shape)
    dw1 = (dh.t() @ pooled).to(w1.dtype).reshape(w1.shape)
    db2 = dv2.sum(0).to(w2.dtype) if has_bias else None
    db1 = dh.sum(0).to(w1.dtype) if has_bias else None
    return dx.to(x.dtype).contiguous(memory_format=fmt), dw1, db1, dw2, db2


TORCH_PATH = types.SimpleNamespace(
    cbam_channel_forward=cbam_channel_forward_torch, cbam_apply=cbam_apply_torch,
    cbam_spatial_grad_inputs=cbam_spatial_grad_inputs_torch,
    cbam_channel_backward=cbam_channel_backward_torch,
    spatial_gate_forward=spatial_gate_forward, spatial_gate_backward=spatial_gate_backward)


def _impl(x):
    return kernels if uses_triton(x) else TORCH_PATH


# ---- custom ops ----------------------------------------------------------------------

def cbam_forward_impl(x: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor | None, b2: Tensor | None,
                      conv_weight: Tensor, conv_bias: Tensor | None, bn_weight: Tensor | None,
                      bn_bias: Tensor | None, running_mean: Tensor | None, running_var: Tensor | None,
                      use_bn: bool, bn_training: bool, eps: float, max_first: bool
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(y, ca [B,C], pooled [2B,C], hidden [2B,RD], maps [B,2,H,W], sa [B,1,H,W],
    bn mean [1], bn var [1]). w2 None: Ultralytics' one-layer channel gate (pooled [B,C], hidden [B,0])."""
    return cbam_forward_math(_impl(x), x, w1, b1, w2, b2, SpatialParams(
        conv_weight, conv_bias, bn_weight, bn_bias, running_mean, running_var, use_bn, bn_training, eps, max_first))


def cbam_forward_math(impl, x, w1, b1, w2, b2, p: SpatialParams):
    """The forward's four stages on ``impl`` (the Triton launchers or TORCH_PATH)."""
    ca, pooled, hidden, maps = impl.cbam_channel_forward(x, w1, b1, w2, b2)
    sa, mean, var = impl.spatial_gate_forward(maps, *p)
    return impl.cbam_apply(x, ca, sa), ca, pooled, hidden, maps, sa, mean, var


def cbam_backward_impl(dy: Tensor, x: Tensor, w1: Tensor, w2: Tensor | None, has_bias: bool,
                       conv_weight: Tensor, conv_bias: Tensor | None, bn_weight: Tensor | None,
                       bn_bias: Tensor | None, use_bn: bool, bn_training: bool, eps: float, max_first: bool,
                       ca: Tensor, pooled: Tensor, hidden: Tensor, maps: Tensor, sa: Tensor, bn_mean: Tensor,
                       bn_var: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dx, dw1, db1, dw2, db2, dconv_weight, dconv_bias, dbn_weight, dbn_bias); gradients of
    absent parameters None. bn_mean / bn_var: what the forward's BatchNorm normalised with."""
    impl = _impl(x)
    dsa, ties = impl.cbam_spatial_grad_inputs(dy, x, ca, maps)
    k_mean, k_max, dcw, dcb, dbw, dbb = impl.spatial_gate_backward(
        dsa, ties, maps, sa, bn_mean, bn_var, x.shape[1], conv_weight, conv_bias, bn_weight, bn_bias, None, None,
        use_bn, bn_training, eps, max_first)
    dx, dw1, db1, dw2, db2 = impl.cbam_channel_backward(dy, x, w1, w2, has_bias, ca, pooled, hidden,
                                                        maps, sa, k_mean, k_max)
    return dx, dw1, db1, dw2, db2, dcw, dcb, dbw, dbb


def _setup_context(ctx, inputs, output):
    (x, w1, b1, w2, b2, conv_weight, conv_bias, bn_weight, bn_bias, running_mean, running_var,
     use_bn, bn_training, eps, max_first) = inputs
    _, ca, pooled, hidden, maps, sa, mean, var = output
    ctx.flags = (b1 is not None, use_bn, bn_training, eps, max_first)
    ctx.present = [t is not None for t in (conv_bias, bn_weight, bn_bias)]
    saved = [x, w1, w2, conv_weight, ca, pooled, hidden, maps, sa, mean, var]
    ctx.save_for_backward(*saved, *(t for t in (conv_bias, bn_weight, bn_bias) if t is not None))


def _gradients(ctx, run, dy, *_unused):
    has_bias, use_bn, bn_training, eps, max_first = ctx.flags
    x, w1, w2, conv_weight, ca, pooled, hidden, maps, sa, mean, var, *rest = ctx.saved_tensors
    optional = [rest.pop(0) if present else None for present in ctx.present]
    grads = run(dy, x, w1, w2, has_bias, conv_weight, *optional, use_bn, bn_training, eps, max_first,
                ca, pooled, hidden, maps, sa, mean, var)
    return *grads, None, None, None, None, None, None


cbam_block = define_block(
    "cbam", cbam_forward_impl, cbam_backward_impl, _setup_context, _gradients,
    lambda x, w1, b1, w2, b2, *p: cbam_forward_math(TORCH_PATH, x, w1, b1, w2, b2, SpatialParams(*p)),
    cbam_math, result=lambda out: (out[0], out[6], out[7]))


# ---- functional API ------------------------------------------------------------------

def check_batch_statistics(x: Tensor, bn_training: bool) -> None:
    """The spatial BatchNorm's batch statistics need more than one value (as nn.BatchNorm2d)."""
    if bn_training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
        raise ValueError("Expected more than 1 value per channel when training the spatial "
                         f"BatchNorm, got input of shape {tuple(x.shape)}")


def cbam(x: Tensor, fc1_weight: Tensor, fc1_bias: Tensor | None, fc2_weight: Tensor | None,
         fc2_bias: Tensor | None, conv_weight: Tensor, conv_bias: Tensor | None = None,
         bn_weight: Tensor | None = None, bn_bias: Tensor | None = None,
         running_mean: Tensor | None = None, running_var: Tensor | None = None,
         use_bn: bool = False, bn_training: bool = False, eps: float = 1e-5, max_first: bool = False,
         return_bn_stats: bool = False):
    """CBAM on x [B, C, H, W]: channel MLP fc1 [RD, C(,1,1)] / fc2 [C, RD(,1,1)] (biases both or
    neither), spatial conv [1, 2, k, k] (k odd) on [mean_c, max_c] maps ([max, mean] with
    max_first), optional BatchNorm (batch statistics when bn_training, else running_mean/var).
    fc2_weight None: Ultralytics' channel gate sigmoid(fc1(mean_hw x)), fc1 [C, C(,1,1)] (no max
    pool, no second layer; fc2_bias None).

    Returns y, or (y, bn_mean, bn_var) with return_bn_stats (what BN normalised with; the
    caller updates running statistics, as fusedattn.CBAM does).
    """
    check_activation(x)
    check_channel_mlp(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    k = conv_weight.shape[-1] if isinstance(conv_weight, Tensor) else 0
    check_param(conv_weight, "conv_weight", x, (1, 2, k, k))
    if k % 2 == 0:
        raise ValueError(f"conv_weight's kernel size must be odd, got {k}")
    for t, name in ((conv_bias, "conv_bias"), (bn_weight, "bn_weight"), (bn_bias, "bn_bias"),
                    (running_mean, "running_mean"), (running_var, "running_var")):
        check_param(t, name, x, (1,))
    if use_bn:
        if (bn_weight is None) != (bn_bias is None):
            raise ValueError("bn_weight and bn_bias must both be given or both be None")
        if not bn_training and (running_mean is None or running_var is None):
            raise ValueError("BatchNorm without batch statistics needs running_mean and running_var")
        check_batch_statistics(x, bn_training)
    args = (x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, conv_weight, conv_bias, bn_weight, bn_bias,
            running_mean, running_var, bool(use_bn), bool(bn_training), float(eps), bool(max_first))
    out = cbam_block(*args)
    return out if return_bn_stats else out[0]
