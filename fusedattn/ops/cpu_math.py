"""The blocks' math as lean plain PyTorch under PyTorch's own autograd: what a fused block runs
on CPU tensors in eager mode (``dispatch.Block``), so that it costs no more than the eager
module it replaces. Same arithmetic as the kernels (float32 accumulation, float64 for
float64), the shapes eager uses ([B, C, 1, 1] vectors, 1x1 convs: no extra view nodes).

Each function takes its op's argument list and returns a tuple whose first entry is y.
"""
import torch
import torch.nn.functional as F

from .epilogue import epilogue_torch
from .spatial_gate import SpatialParams, spatial_gate
from .validation import acc_dtype, as_dtype, in_layout_of


def _conv1x1(v, w, b, dt):
    """A 1x1 conv (or Linear weight [out, in]) on [B, in, 1, 1] vectors."""
    if w.dim() == 2:
        w = w[:, :, None, None]
    return F.conv2d(v, as_dtype(w, dt), as_dtype(b, dt))


def _mean_hw(x, dt):
    return x.mean((2, 3), keepdim=True) if x.dtype == dt else x.mean((2, 3), keepdim=True, dtype=dt)


def _finish(x, y, shortcut, act):
    """The residual epilogue (when asked for), then y in x's dtype and output layout."""
    if shortcut is not None or act:
        y = epilogue_torch(y, shortcut, act)
    return in_layout_of(x, y)


def se_math(x, w1, b1, w2, b2, add_maxpool, shortcut, act):
    dt = acc_dtype(x)
    s = _mean_hw(x, dt)
    if add_maxpool:
        s = 0.5 * s + 0.5 * as_dtype(x.amax((2, 3), keepdim=True), dt)
    gate = _conv1x1(_conv1x1(s, w1, b1, dt).relu(), w2, b2, dt).sigmoid()
    return (_finish(x, as_dtype(x, dt) * gate, shortcut, act),)


def eca_math(x, weight, bias, circular, shortcut, act):
    B, C = x.shape[:2]
    dt = acc_dtype(x)
    k = weight.shape[-1]
    pad = (k - 1) // 2
    v = (x.mean((2, 3)) if x.dtype == dt else x.mean((2, 3), dtype=dt)).view(B, 1, C)
    if circular:
        v = torch.cat([v[..., C - pad:], v, v[..., :pad]], -1) if pad else v
        z = F.conv1d(v, as_dtype(weight, dt), as_dtype(bias, dt))
    else:
        z = F.conv1d(v, as_dtype(weight, dt), as_dtype(bias, dt), padding=pad)
    return (_finish(x, as_dtype(x, dt) * z.sigmoid().view(B, C, 1, 1), shortcut, act),)


def cbam_module_math(x, fc1, fc2, conv, bn, max_first):
    """CBAM's output from its own submodules (fc1, fc2 1x1 convs; the spatial conv and its
    BatchNorm, which updates its running statistics itself, as in the eager block). For float32
    and float64 x (the accumulation dtype)."""
    def mlp(v):
        return F.conv2d(F.conv2d(v, fc1.weight, fc1.bias).relu(), fc2.weight, fc2.bias)

    x1 = x * (mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True))).sigmoid()
    maps = [x1.mean(1, keepdim=True), x1.amax(1, keepdim=True)]
    s = conv(torch.cat(maps[::-1] if max_first else maps, 1))
    return in_layout_of(x, x1 * (bn(s) if bn is not None else s).sigmoid())


def cbam_math(x, w1, b1, w2, b2, conv_weight, conv_bias, bn_weight, bn_bias, running_mean, running_var,
              use_bn, bn_training, eps, max_first):
    """(y, bn mean, bn var): the statistics the spatial BatchNorm normalised with."""
    B = x.shape[0]
    dt = acc_dtype(x)
    pooled = torch.cat([_mean_hw(x, dt), as_dtype(x.amax((2, 3), keepdim=True), dt)])
    z = _conv1x1(_conv1x1(pooled, w1, b1, dt).relu(), w2, b2, dt)
    x1 = as_dtype(x, dt) * (z[:B] + z[B:]).sigmoid()
    maps = torch.cat([x1.mean(1, keepdim=True), x1.amax(1, keepdim=True)], 1)
    sa, mean, var = spatial_gate(maps, SpatialParams(conv_weight, conv_bias, bn_weight, bn_bias, running_mean,
                                                     running_var, use_bn, bn_training, eps, max_first))
    return in_layout_of(x, x1 * sa), mean.detach(), var.detach()
