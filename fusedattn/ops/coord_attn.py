"""Coordinate Attention as one opaque op:

    p = [mean_w x, mean_h x]  [B, C, H + W]
    z = conv1(p) [B, rd, H + W],  t = act(bn1(z))     (bn1 optional; batch statistics over B and
                                                        the H + W positions, or running ones)
    a_h = gate(conv_h(t[..., :H])),  a_w = gate(conv_w(t[..., H:]))
    y = x * a_h[b, c, h] * a_w[b, c, w]  (+ x with skip)

``fusedattn::coord_attn_forward`` / ``_backward``. CUDA tensors: the x-sized passes are Triton
kernels (fusedattn.kernels.coord_attn: two passes forward, reading x twice and writing y once;
two backward, reading x once and dy twice, writing dx once); the gate on the [B, C, H + W] strip
vectors (1 / min(H, W) of x's size) is the PyTorch math below, on every device. CPU tensors: all
of it in PyTorch.
"""
import torch
from torch import Tensor

from ..backend import plain_pytorch, uses_triton
from ..kernels.coord_attn import strip_gate_grads, strip_means, strip_scale
from .activations import activation, activation_grad, code_arg, gate_grad
from .registration import define_block
from .validation import acc_dtype, as_dtype, check_activation, check_param, in_layout_of


# ---- the gate on the strip vectors (every device) --------------------------------------

def _conv1x1(w: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
    """A 1x1 conv over positions: w [out, in, 1, 1] on v [B, in, L] -> [B, out, L]."""
    z = torch.matmul(w.reshape(w.shape[0], -1), v)
    return z if bias is None else z + bias[:, None]


def _normalise(z, bn_weight, bn_bias, mean, var, eps):
    """(bn(z), 1 / sqrt(var + eps)) with per-channel statistics of z [B, rd, L]."""
    invstd = torch.rsqrt(var + eps)
    return (z - mean[:, None]) * (invstd * bn_weight)[:, None] + bn_bias[:, None], invstd


def gate_forward(p, w1, b1, bn_weight, bn_bias, running_mean, running_var, use_bn, batch_stats, eps, wh, bh, ww, bw,
                 act, gate, H):
    """(z [B, rd, L], a [B, C, L] = [a_h, a_w], batch mean [rd], batch biased var [rd]) from the
    strip means p [B, C, L]; the statistics are empty unless bn1 normalises with the batch's."""
    dt = p.dtype
    w1, b1, wh, bh, ww, bw = (as_dtype(t, dt) for t in (w1, b1, wh, bh, ww, bw))
    z = _conv1x1(w1, p, b1)
    mean, var = z.new_empty((0,)), z.new_empty((0,))   # two: outputs may not alias
    u = z
    if use_bn:
        if batch_stats:
            # two passes, as nn.BatchNorm2d (an inf in z gives an inf mean, not var_mean's NaN)
            mean = z.mean((0, 2))
            var = (z - mean[:, None]).square().mean((0, 2))
            u, _ = _normalise(z, as_dtype(bn_weight, dt), as_dtype(bn_bias, dt), mean, var, eps)
        else:
            u, _ = _normalise(z, as_dtype(bn_weight, dt), as_dtype(bn_bias, dt), as_dtype(running_mean, dt),
                              as_dtype(running_var, dt), eps)
    t = activation(u, act)
    a = torch.cat([_conv1x1(wh, t[:, :, :H], bh), _conv1x1(ww, t[:, :, H:], bw)], dim=2)
    return z, activation(a, gate), mean, var


def gate_backward(da, p, z, a, w1, bn_weight, bn_bias, mean, var, use_bn, batch_stats, eps, wh, ww, act, gate, H,
                  has_bias):
    """Gradients of gate_forward from da [B, C, L] (d of a_h, a_w): (dp [B, C, L], dw1, db1,
    dbn_weight, dbn_bias, dwh, dbh, dww, dbw); biases' None without bias, bn's None without bn1."""
    dt = p.dtype
    w1, wh, ww = as_dtype(w1, dt), as_dtype(wh, dt), as_dtype(ww, dt)
    dlogit = gate_grad(da, a, gate)
    u, invstd = z, None
    if use_bn:
        gamma, beta = as_dtype(bn_weight, dt), as_dtype(bn_bias, dt)
        u, invstd = _normalise(z, gamma, beta, as_dtype(mean, dt), as_dtype(var, dt), eps)
    t = activation(u, act)
    grads = []
    dt_parts = []
    for w, d, tt in ((wh, dlogit[:, :, :H], t[:, :, :H]), (ww, dlogit[:, :, H:], t[:, :, H:])):
        grads += [torch.matmul(d, tt.transpose(1, 2)).sum(0).reshape(w.shape), d.sum((0, 2)) if has_bias else None]
        dt_parts.append(torch.matmul(w.reshape(w.shape[0], -1).t(), d))
    du = activation_grad(torch.cat(dt_parts, dim=2), u, act)
    dgamma = dbeta = None
    dz = du
    if use_bn:
        xhat = (z - as_dtype(mean, dt)[:, None]) * invstd[:, None]
        dbeta, dgamma = du.sum((0, 2)), (du * xhat).sum((0, 2))
        if batch_stats:
            n = z.shape[0] * z.shape[2]
            dz = (gamma * invstd)[:, None] * (du - (dbeta[:, None] + xhat * dgamma[:, None]) / n)
        else:
            dz = du * (gamma * invstd)[:, None]
    dw1 = torch.matmul(dz, p.transpose(1, 2)).sum(0).reshape(w1.shape)
    db1 = dz.sum((0, 2)) if has_bias else None
    dp = torch.matmul(w1.reshape(w1.shape[0], -1).t(), dz)
    return dp, dw1, db1, dgamma, dbeta, *grads


# ---- the op ---------------------------------------------------------------------------

def _strip_means_torch(x, dt):
    xf = x.to(dt)
    return xf.mean(3), xf.mean(2)


def coord_attn_forward_impl(x: Tensor, w1: Tensor, b1: Tensor | None, bn_weight: Tensor | None,
                            bn_bias: Tensor | None, running_mean: Tensor | None, running_var: Tensor | None,
                            use_bn: bool, batch_stats: bool, eps: float, wh: Tensor, bh: Tensor | None, ww: Tensor,
                            bw: Tensor | None, act: int, gate: int, skip: bool
                            ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(y, p [B, C, H + W] strip means, z [B, rd, H + W] conv1's output, a [B, C, H + W] = [a_h,
    a_w], bn1's batch mean and biased variance [rd] (empty unless batch statistics))."""
    B, C, H, W = x.shape
    dt = acc_dtype(x)
    triton_path = uses_triton(x)
    x_h, x_w = strip_means(x) if triton_path else _strip_means_torch(x, dt)
    p = torch.cat([x_h, x_w], dim=2)
    z, a, mean, var = gate_forward(p, w1, b1, bn_weight, bn_bias, running_mean, running_var, use_bn, batch_stats,
                                   eps, wh, bh, ww, bw, act, gate, H)
    a_h, a_w = a[:, :, :H], a[:, :, H:]
    if triton_path:
        y = strip_scale(x, a_h.contiguous(), a_w.contiguous(), skip)
    else:
        xf = x.to(dt)
        y = xf * a_h[..., None] * a_w[:, :, None, :]
        y = in_layout_of(x, y + xf if skip else y)
    return y, p, z, a, mean, var


def coord_attn_backward_impl(dy: Tensor, x: Tensor, w1: Tensor, bn_weight: Tensor | None, bn_bias: Tensor | None,
                             mean: Tensor | None, var: Tensor | None, use_bn: bool, batch_stats: bool, eps: float,
                             wh: Tensor, ww: Tensor, p: Tensor, z: Tensor, a: Tensor, act: int, gate: int, skip: bool,
                             has_bias: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                                      Tensor]:
    """(dx, dw1, db1, dbn_weight, dbn_bias, dwh, dbh, dww, dbw); None for absent parameters.
    mean / var: what bn1 normalised with (batch or running statistics)."""
    B, C, H, W = x.shape
    dt = p.dtype
    a_h, a_w = a[:, :, :H].contiguous(), a[:, :, H:].contiguous()
    triton_path = uses_triton(x)
    if triton_path:
        da_h, da_w = strip_gate_grads(dy, x, a_h, a_w)
    else:
        g = dy.to(dt) * x.to(dt)
        da_h, da_w = (g * a_w[:, :, None, :]).sum(3), (g * a_h[..., None]).sum(2)
    dp, *weight_grads = gate_backward(torch.cat([da_h, da_w], dim=2), p, z, a, w1, bn_weight, bn_bias, mean, var,
                                      use_bn, batch_stats, eps, wh, ww, act, gate, H, has_bias)
    k_h, k_w = dp[:, :, :H] / W, dp[:, :, H:] / H
    if triton_path:
        dx = strip_scale(dy, a_h, a_w, skip, k_h.contiguous(), k_w.contiguous())
    else:
        g = dy.to(dt)
        dx = g * a_h[..., None] * a_w[:, :, None, :] + k_h[..., None] + k_w[:, :, None, :]
        dx = in_layout_of(x, dx + g if skip else dx)
    return (dx, *weight_grads)


def _setup_context(ctx, inputs, output):
    (x, w1, b1, bn_weight, bn_bias, running_mean, running_var, use_bn, batch_stats, eps, wh, bh, ww, bw, act, gate,
     skip) = inputs
    _, p, z, a, mean, var = output
    if use_bn and not batch_stats:
        mean, var = running_mean, running_var
    ctx.flags = (use_bn, batch_stats, eps, act, gate, skip, b1 is not None)
    ctx.save_for_backward(x, w1, bn_weight, bn_bias, mean, var, wh, ww, p, z, a)


def _gradients(ctx, run, dy, *_unused):
    x, w1, bn_weight, bn_bias, mean, var, wh, ww, p, z, a = ctx.saved_tensors
    use_bn, batch_stats, eps, act, gate, skip, has_bias = ctx.flags
    dx, dw1, db1, dgamma, dbeta, dwh, dbh, dww, dbw = run(dy, x, w1, bn_weight, bn_bias, mean, var, use_bn,
                                                          batch_stats, eps, wh, ww, p, z, a, act, gate, skip,
                                                          has_bias)
    return dx, dw1, db1, dgamma, dbeta, None, None, None, None, None, dwh, dbh, dww, dbw, None, None, None


def coord_attn_torch(*args):
    """The op's forward in plain PyTorch (ONNX export and torch.jit.trace trace it)."""
    with plain_pytorch():
        return coord_attn_forward_impl(*args)


#: the caller's outputs: (y, bn1's batch mean, batch biased variance)
coord_attn_block = define_block("coord_attn", coord_attn_forward_impl, coord_attn_backward_impl, _setup_context,
                                _gradients, coord_attn_torch, result=lambda out: (out[0], out[4], out[5]))


# ---- functional API ------------------------------------------------------------------

def coord_attention(x: Tensor, conv1_weight: Tensor, conv_h_weight: Tensor, conv_w_weight: Tensor,
                    conv1_bias: Tensor | None = None, conv_h_bias: Tensor | None = None,
                    conv_w_bias: Tensor | None = None, bn_weight: Tensor | None = None, bn_bias: Tensor | None = None,
                    running_mean: Tensor | None = None, running_var: Tensor | None = None, training: bool = False,
                    eps: float = 1e-5, act="hardswish", gate="sigmoid", skip: bool = False):
    """Coordinate Attention on x [B, C, H, W] (see the module docstring). Weights: conv1 [rd, C, 1,
    1], conv_h / conv_w [C, rd, 1, 1]; bn1 (optional: bn_weight and bn_bias given) normalises with
    the batch's statistics when ``training`` or without running statistics, else with
    running_mean / running_var (not updated here: fusedattn.CoordAttn does that). Returns y."""
    check_activation(x)
    C = x.shape[1]
    check_param(conv1_weight, "conv1_weight", x)
    if conv1_weight.dim() != 4 or conv1_weight.shape[1:] != (C, 1, 1):
        raise ValueError(f"conv1_weight must have shape (rd, {C}, 1, 1), got {tuple(conv1_weight.shape)}")
    rd = conv1_weight.shape[0]
    for name, w in (("conv_h_weight", conv_h_weight), ("conv_w_weight", conv_w_weight)):
        check_param(w, name, x, (C, rd, 1, 1))
    biases = (conv1_bias, conv_h_bias, conv_w_bias)
    if any(b is None for b in biases) != all(b is None for b in biases):
        raise ValueError("conv1_bias, conv_h_bias and conv_w_bias must all be given or all be None")
    for name, b, n in (("conv1_bias", conv1_bias, rd), ("conv_h_bias", conv_h_bias, C), ("conv_w_bias", conv_w_bias, C)):
        check_param(b, name, x, (n,))
    use_bn = bn_weight is not None
    if use_bn != (bn_bias is not None):
        raise ValueError("bn_weight and bn_bias must both be given or both be None")
    for name, t in (("bn_weight", bn_weight), ("bn_bias", bn_bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        check_param(t, name, x, (rd,))
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must both be given or both be None")
    batch_stats = use_bn and (bool(training) or running_mean is None)   # B * (H + W) >= 2 values always
    return coord_attn_block(x, conv1_weight, conv1_bias, bn_weight, bn_bias, running_mean, running_var, use_bn,
                            batch_stats, float(eps), conv_h_weight, conv_h_bias, conv_w_weight, conv_w_bias,
                            code_arg(act, "act"), code_arg(gate, "gate", gate=True), bool(skip))[0]
