"""The blocks' math as lean plain PyTorch under PyTorch's own autograd: what a fused block runs
on CPU tensors in eager mode (``dispatch.Block``), so that it costs no more than the eager
module it replaces. Same arithmetic as the kernels (float32 accumulation, float64 for
float64), and no more ATen ops than the eager block (SE's channel MLP as the eager block's 1x1
convs on [B, C, 1, 1]; CBAM's as Linear on [B, C]).

Each function takes its op's argument list and returns a tuple whose first entry is y.
"""
import torch
import torch.nn.functional as F

from ..kernels.activations import RELU
from .activations import activation
from .epilogue import epilogue_torch
from .spatial_gate import SpatialParams, spatial_gate
from .validation import acc_dtype, as_dtype, in_layout_of


def _mlp(v, w1, b1, w2, b2, dt, mlp_act=RELU):
    """fc2(act(fc1(v))) on [B, C] vectors (act: an activation-table code), with 1x1-conv ([out, in, 1, 1]) or Linear
    weights; w2 None: the one-layer gate's fc1(v).

    Linear on [B, C], not conv2d on [B, C, 1, 1]: CPU convolution may pick oneDNN, whose
    [B, C, 1, 1] output has channels_last strides, and x * gate would then come out
    channels_last (a copy back to x's layout, x-sized, for nothing)."""
    z = F.linear(v, as_dtype(w1.reshape(w1.shape[0], -1), dt), as_dtype(b1, dt))
    if w2 is None:
        return z
    return F.linear(activation(z, mlp_act), as_dtype(w2.reshape(w2.shape[0], -1), dt), as_dtype(b2, dt))


def _mean_hw(x, dt, keepdim: bool = False):
    """[B, C] (keepdim: [B, C, 1, 1]) means over H*W in the accumulation dtype (no dtype argument
    when x has it)."""
    return x.mean((2, 3), keepdim) if x.dtype == dt else x.mean((2, 3), keepdim, dtype=dt)


def _channel_attention(x, w1, b1, w2, b2, dt):
    """CBAM's first half: x * sigmoid(mlp(mean_hw x) + mlp(max_hw x)), in dtype dt; w2 None:
    x * sigmoid(fc1(mean_hw x)) (Ultralytics)."""
    B, C = x.shape[:2]
    logits = _mlp(_mean_hw(x, dt), w1, b1, w2, b2, dt)
    if w2 is not None:   # the max-pooled branch through the same MLP
        logits = logits + _mlp(as_dtype(x.amax((2, 3)), dt), w1, b1, w2, b2, dt)
    return as_dtype(x, dt) * logits.sigmoid().view(B, C, 1, 1)


def _finish(x, y, shortcut, act):
    """The residual epilogue (when asked for), then y in x's dtype and output layout."""
    if shortcut is not None or act:
        y = epilogue_torch(y, shortcut, act)
    return in_layout_of(x, y)


def se_math(x, w1, b1, w2, b2, add_maxpool, shortcut, act, mlp_act, gate_fn):
    dt = acc_dtype(x)
    if w1.dim() == 4:   # 1x1-conv weights: the eager block's own ops on [B, C, 1, 1] (no reshape, view or
        # transpose of a weight in the autograd graph: 5 backward nodes fewer than Linear on [B, C])
        s = _mean_hw(x, dt, keepdim=True)
        if add_maxpool:
            s = 0.5 * s + 0.5 * as_dtype(x.amax((2, 3), keepdim=True), dt)
        z = F.conv2d(s, as_dtype(w1, dt), as_dtype(b1, dt))
        if w2 is not None:
            z = F.conv2d(activation(z, mlp_act), as_dtype(w2, dt), as_dtype(b2, dt))
        return (_finish(x, as_dtype(x, dt) * activation(z, gate_fn), shortcut, act),)
    B, C = x.shape[:2]
    s = _mean_hw(x, dt)
    if add_maxpool:
        s = 0.5 * s + 0.5 * as_dtype(x.amax((2, 3)), dt)
    gate = activation(_mlp(s, w1, b1, w2, b2, dt, mlp_act), gate_fn).view(B, C, 1, 1)
    return (_finish(x, as_dtype(x, dt) * gate, shortcut, act),)


def eca_math(x, weight, bias, circular, shortcut, act):
    B, C, _, _ = x.shape
    dt = acc_dtype(x)
    pad = (weight.shape[-1] - 1) // 2
    v = _mean_hw(x, dt).view(B, 1, C)
    if circular:
        v = torch.cat([v[..., C - pad:], v, v[..., :pad]], -1) if pad else v
        z = F.conv1d(v, as_dtype(weight, dt), as_dtype(bias, dt))
    else:
        z = F.conv1d(v, as_dtype(weight, dt), as_dtype(bias, dt), 1, pad)   # (stride, padding: positional)
    return (_finish(x, as_dtype(x, dt) * z.sigmoid().view(B, C, 1, 1), shortcut, act),)


def cbam_module_math(x, w1, b1, w2, b2, conv, bn, max_first):
    """CBAM's output from its channel MLP's weights (w2 None: one layer) and its own spatial
    submodules (the conv and its BatchNorm, which updates its running statistics itself, as in the
    eager block). For float32 and float64 x (the accumulation dtype)."""
    x1 = _channel_attention(x, w1, b1, w2, b2, x.dtype)
    maps = [x1.mean(1, keepdim=True), x1.amax(1, keepdim=True)]
    s = conv(torch.cat(maps[::-1] if max_first else maps, 1))
    return in_layout_of(x, x1 * (bn(s) if bn is not None else s).sigmoid())


def cbam_math(x, w1, b1, w2, b2, conv_weight, conv_bias, bn_weight, bn_bias, running_mean, running_var,
              use_bn, bn_training, eps, max_first, batch_stats=None):
    """(y, bn mean, bn var): the statistics the spatial BatchNorm normalised with (batch_stats:
    see spatial_gate)."""
    x1 = _channel_attention(x, w1, b1, w2, b2, acc_dtype(x))
    maps = torch.cat([x1.mean(1, keepdim=True), x1.amax(1, keepdim=True)], 1)
    sa, mean, var = spatial_gate(maps, SpatialParams(conv_weight, conv_bias, bn_weight, bn_bias, running_mean,
                                                     running_var, use_bn, bn_training, eps, max_first),
                                 batch_stats)
    return in_layout_of(x, x1 * sa), mean.detach(), var.detach()


def coord_attn_module_math(x, conv1, bn1, conv_h, conv_w, act, gate, skip):
    """Coordinate Attention's output from its own submodules (bn1 None or a BatchNorm module that
    updates its running statistics itself, as in the eager block); act, gate: table codes. For
    float32 and float64 x. The reference's ATen ops (the strips as [B, C, H + W, 1], 1x1
    convolutions: one backward op each for input and weight), without its module calls. Without
    gradients the two gates are multiplied into one [B, C, H, W] factor first, then x into it in
    place: one broadcast product and one plain one, where x * a_w * a_h makes two broadcast
    products (several times slower on CPU); under autograd the reference's order (its backward
    makes fewer x-sized temporaries: measured 4.9 ms against 6.5 ms at 8x256x14x14)."""
    H, W = x.shape[2:]
    p = torch.cat([x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(-1, -2)], dim=2)
    z = F.conv2d(p, conv1.weight, conv1.bias)
    if bn1 is not None:
        z = bn1(z)
    t_h, t_w = torch.split(activation(z, act), [H, W], dim=2)
    a_h = activation(F.conv2d(t_h, conv_h.weight, conv_h.bias), gate)                      # [B, C, H, 1]
    a_w = activation(F.conv2d(t_w, conv_w.weight, conv_w.bias), gate).transpose(-1, -2)    # [B, C, 1, W]
    if torch._C._is_tracing() or (torch.is_grad_enabled() and (x.requires_grad or a_h.requires_grad)):
        y = x * a_w * a_h   # (a trace records one graph, whatever the grad mode of its check run)
    else:
        y = torch.mul(a_h, a_w, out=torch.empty_like(x)).mul_(x)   # in x's memory format
    return in_layout_of(x, y + x if skip else y)
