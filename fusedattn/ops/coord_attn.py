"""Coordinate Attention as one opaque op:

    p = [mean_w x; mean_h x]  [H + W, B, C] (position-major, as kernels/coord_attn.py keeps it)
    z = conv1(p) [(H + W) B, rd],  t = act(bn1(z))   (bn1 optional; batch statistics over B and
                                                      the H + W positions, or running ones)
    a_h = gate(conv_h(t_h)),  a_w = gate(conv_w(t_w))  (the first H B rows, the last W B)
    y = x * a_h[b, c, h] * a_w[b, c, w]  (+ x with skip)

``fusedattn::coord_attn_forward`` / ``_backward``. CUDA tensors: the x-sized passes are Triton
kernels (fusedattn.kernels.coord_attn: two passes forward, reading x twice and writing y once;
two backward, reading x once and dy twice, writing dx once); the gate on the [H + W, B, C] strip
vectors (1 / min(H, W) of x's size) is the PyTorch math below, on every device. CPU tensors: all
of it in PyTorch.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from ..backend import plain_pytorch, uses_triton
from ..kernels.coord_attn import strip_gate_grads, strip_means, strip_scale
from .activations import activation, activation_grad, code_arg, gate_grad
from .registration import define_block
from .validation import acc_dtype, as_dtype, check_activation, check_param, in_layout_of


# ---- the gate on the strip vectors (every device) --------------------------------------
# Rows are the strip positions of all samples, [(H + W) B, C] (kernels/coord_attn.py's layout): the
# 1x1 convs are matrix products on them, bn1 a BatchNorm over rd channels of (H + W) B rows, the h
# rows the first H B of them. 6 ATen kernels forward (7 with batch statistics), 9 backward.

def _empty(like: Tensor) -> Tensor:
    return like.new_empty((0,))


def gate_forward(p, w1, b1, bn_weight, bn_bias, running_mean, running_var, use_bn, batch_stats, eps, wh, bh, ww, bw,
                 act, gate, hb, traced=False):
    """(z = conv1(p), u = bn1(z) (empty without bn1), t = act(u) (empty for identity), a = gate of
    [conv_h(t_h); conv_w(t_w)], bn1's batch mean, 1 / sqrt(var + eps) and biased var (empty unless
    batch statistics)) from the strip rows p [(H + W) B, C]; hb = H B, the h rows. traced: for
    exporters and torch.jit.trace (no out= products)."""
    dt = p.dtype
    w1, b1, wh, bh, ww, bw = (as_dtype(t, dt) for t in (w1, b1, wh, bh, ww, bw))
    z = F.linear(p, w1.flatten(1), b1)
    mean, invstd, var = _empty(z), _empty(z), _empty(z)
    u = z
    if use_bn:
        gamma, beta = as_dtype(bn_weight, dt), as_dtype(bn_bias, dt)
        stats = (None, None) if batch_stats else (as_dtype(running_mean, dt), as_dtype(running_var, dt))
        if traced:   # ONNX has no native_batch_norm: F.batch_norm, with the statistics as standard ops
            u = F.batch_norm(z, *stats, gamma, beta, batch_stats, 0.0, eps)
            if batch_stats:
                var, mean = torch.var_mean(z, 0, correction=0)
                invstd = torch.rsqrt(var + eps)
        else:
            u, mean, invstd = torch.native_batch_norm(z, gamma, beta, *stats, batch_stats, 0.0, eps)
            if batch_stats:
                var = torch.var(z, 0, correction=0)
        if not batch_stats:
            mean, invstd = _empty(z), _empty(z)
    t = activation(u, act)
    return (z, u if use_bn else _empty(z), t if act else _empty(z), activation(_h_and_w_rows(t, hb, wh, bh, ww, bw, traced), gate),
            mean, invstd, var)


def _h_and_w_rows(t, hb, wh, bh, ww, bw, traced):
    """[conv_h(t[:hb]); conv_w(t[hb:])]: each product written into its rows of one tensor (no
    cat), or concatenated while an exporter traces (out= does not differentiate)."""
    if traced:
        return torch.cat([F.linear(t[:hb], wh.flatten(1), bh), F.linear(t[hb:], ww.flatten(1), bw)])
    logits = t.new_empty((t.shape[0], wh.shape[0]))
    for w, b, rows in ((wh, bh, slice(0, hb)), (ww, bw, slice(hb, None))):
        if b is None:
            torch.mm(t[rows], w.flatten(1).t(), out=logits[rows])
        else:
            torch.addmm(b, t[rows], w.flatten(1).t(), out=logits[rows])
    return logits


def gate_backward(da, p, z, u, t, a, w1, bn_weight, running_mean, running_var, mean, invstd, use_bn, batch_stats,
                  eps, wh, ww, act, gate, hb, has_bias):
    """Gradients of gate_forward from da [(H + W) B, C] (d of a): (dp, dw1, db1, dbn_weight,
    dbn_bias, dwh, dbh, dww, dbw); biases' None without bias, bn's None without bn1."""
    dt = p.dtype
    w1f, whf, wwf = (as_dtype(w, dt).flatten(1) for w in (w1, wh, ww))
    u = u if use_bn else z
    t = t if act else u
    dlogit = gate_grad(da, a, gate)
    grads = []
    dt_rows = z.new_empty(z.shape)
    for wf, rows in ((whf, slice(0, hb)), (wwf, slice(hb, None))):
        d = dlogit[rows]
        grads += [torch.mm(d.t(), t[rows]), d.sum(0) if has_bias else None]
        torch.mm(d, wf, out=dt_rows[rows])
    dz = activation_grad(dt_rows, u, act)
    dgamma = dbeta = None
    if use_bn:
        affine = bn_weight is not None
        # CUDA's kernel wants the saved statistics defined in eval too: the forward's empty ones
        stats = (None, None, mean, invstd) if batch_stats else (as_dtype(running_mean, dt), as_dtype(running_var, dt),
                                                                 mean, invstd)
        dz, dgamma, dbeta = torch.ops.aten.native_batch_norm_backward(
            dz, z, as_dtype(bn_weight, dt), *stats, batch_stats, eps, [True, affine, affine])
    dw1 = torch.mm(dz.t(), p)
    db1 = dz.sum(0) if has_bias else None
    return torch.mm(dz, w1f), dw1, db1, dgamma, dbeta, *grads


# ---- the op ---------------------------------------------------------------------------

def _strip_means_torch(x, dt):
    """[H + W, B, C]: the means over W, then the means over H."""
    xf = x.to(dt)
    return torch.cat([xf.mean(3).permute(2, 0, 1), xf.mean(2).permute(2, 0, 1)], 0)


def _as_bchw(v: Tensor, H: int) -> tuple[Tensor, Tensor]:
    """[H + W, B, C] -> views a_h [B, C, H, 1], a_w [B, C, 1, W] (the plain-PyTorch path)."""
    return v[:H].permute(1, 2, 0).unsqueeze(3), v[H:].permute(1, 2, 0).unsqueeze(2)


def coord_attn_forward_impl(x: Tensor, w1: Tensor, b1: Tensor | None, bn_weight: Tensor | None,
                            bn_bias: Tensor | None, running_mean: Tensor | None, running_var: Tensor | None,
                            use_bn: bool, batch_stats: bool, eps: float, wh: Tensor, bh: Tensor | None, ww: Tensor,
                            bw: Tensor | None, act: int, gate: int, skip: bool
                            ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(y, p [H + W, B, C] strip means, z, u, t [(H + W) B, rd] (conv1's output, bn1's, act's:
    u and t empty where they equal the one before), a [H + W, B, C] = [a_h; a_w], bn1's batch mean,
    1 / sqrt(var + eps) and biased variance [rd] (empty unless batch statistics))."""
    return _forward(x, w1, b1, bn_weight, bn_bias, running_mean, running_var, use_bn, batch_stats, eps, wh, bh, ww, bw,
                    act, gate, skip)


def _forward(x, w1, b1, bn_weight, bn_bias, running_mean, running_var, use_bn, batch_stats, eps, wh, bh, ww, bw, act,
             gate, skip, traced=False):
    B, C, H, W = x.shape
    dt = acc_dtype(x)
    triton_path = uses_triton(x)
    p = strip_means(x) if triton_path else _strip_means_torch(x, dt)
    z, u, t, a, mean, invstd, var = gate_forward(p.view(-1, C), w1, b1, bn_weight, bn_bias, running_mean,
                                                 running_var, use_bn, batch_stats, eps, wh, bh, ww, bw, act, gate,
                                                 H * B, traced)
    a = a.view(H + W, B, C)
    if triton_path:
        y = strip_scale(x, a, skip)
    else:
        a_h, a_w = _as_bchw(a, H)
        xf = x.to(dt)
        y = xf * a_h * a_w
        y = in_layout_of(x, y + xf if skip else y)
    return y, p, z, u, t, a, mean, invstd, var


def coord_attn_backward_impl(dy: Tensor, x: Tensor, w1: Tensor, bn_weight: Tensor | None,
                             running_mean: Tensor | None, running_var: Tensor | None, mean: Tensor, invstd: Tensor,
                             use_bn: bool, batch_stats: bool, eps: float, wh: Tensor, ww: Tensor, p: Tensor,
                             z: Tensor, u: Tensor, t: Tensor, a: Tensor, act: int, gate: int, skip: bool,
                             has_bias: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                                      Tensor]:
    """(dx, dw1, db1, dbn_weight, dbn_bias, dwh, dbh, dww, dbw); None for absent parameters."""
    B, C, H, W = x.shape
    dt = p.dtype
    triton_path = uses_triton(x)
    if triton_path:
        da = strip_gate_grads(dy, x, a)
    else:
        g = dy.to(dt) * x.to(dt)
        a_h, a_w = _as_bchw(a, H)
        da = torch.cat([(g * a_w).sum(3).permute(2, 0, 1), (g * a_h).sum(2).permute(2, 0, 1)], 0)
    dp, *weight_grads = gate_backward(da.view(-1, C), p.view(-1, C), z, u, t, a.view(-1, C), w1, bn_weight,
                                      running_mean, running_var, mean, invstd, use_bn, batch_stats, eps, wh, ww, act,
                                      gate, H * B, has_bias)
    dp = dp.view(H + W, B, C)
    if triton_path:
        dx = strip_scale(dy, a, skip, dp)
    else:
        a_h, a_w = _as_bchw(a, H)
        k_h, k_w = _as_bchw(dp, H)
        g = dy.to(dt)
        dx = g * a_h * a_w + k_h / W + k_w / H
        dx = in_layout_of(x, dx + g if skip else dx)
    dw1, db1, dgamma, dbeta, dwh, dbh, dww, dbw = weight_grads
    weights = (as_dtype(dw1, w1.dtype).view(w1.shape), as_dtype(dwh, wh.dtype).view(wh.shape),
               as_dtype(dww, ww.dtype).view(ww.shape))
    vectors = (as_dtype(g_, w1.dtype) if g_ is not None else None for g_ in (db1, dgamma, dbeta, dbh, dbw))
    db1, dgamma, dbeta, dbh, dbw = vectors    # the biases and bn1's in their weights' dtype
    return dx, weights[0], db1, dgamma, dbeta, weights[1], dbh, weights[2], dbw


def _setup_context(ctx, inputs, output):
    (x, w1, b1, bn_weight, bn_bias, running_mean, running_var, use_bn, batch_stats, eps, wh, bh, ww, bw, act, gate,
     skip) = inputs
    _, p, z, u, t, a, mean, invstd, _ = output
    ctx.flags = (use_bn, batch_stats, eps, act, gate, skip, b1 is not None)
    stats = (None, None) if batch_stats or not use_bn else (running_mean, running_var)
    ctx.save_for_backward(x, w1, bn_weight, *stats, mean, invstd, wh, ww, p, z, u, t, a)


def _gradients(ctx, run, dy, *_unused):
    x, w1, bn_weight, running_mean, running_var, mean, invstd, wh, ww, p, z, u, t, a = ctx.saved_tensors
    use_bn, batch_stats, eps, act, gate, skip, has_bias = ctx.flags
    dx, dw1, db1, dgamma, dbeta, dwh, dbh, dww, dbw = run(dy, x, w1, bn_weight, running_mean, running_var, mean,
                                                          invstd, use_bn, batch_stats, eps, wh, ww, p, z, u, t, a,
                                                          act, gate, skip, has_bias)
    return dx, dw1, db1, dgamma, dbeta, None, None, None, None, None, dwh, dbh, dww, dbw, None, None, None


def coord_attn_torch(*args):
    """The op's forward in plain PyTorch (ONNX export and torch.jit.trace trace it)."""
    with plain_pytorch():
        return _forward(*args, traced=True)


#: the caller's outputs: (y, bn1's batch mean, batch biased variance)
coord_attn_block = define_block("coord_attn", coord_attn_forward_impl, coord_attn_backward_impl, _setup_context,
                                _gradients, coord_attn_torch, result=lambda out: (out[0], out[6], out[8]))


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
