"""SK's attention tail (after the P branch convs) as one opaque op:

    s = mean_hw(sum_p x_p);  u = BN(W_r s);  att = softmax_p(W_s relu(u));  y = sum_p att_p * x_p

``fusedattn::sk_forward`` / ``fusedattn::sk_backward``: torch.library custom ops over the list
of path tensors (no stacked copy), with fake impls and registered autograd. CUDA tensors run
the Triton kernels (fusedattn.kernels.sk); CPU tensors the plain-PyTorch math below. BatchNorm
uses batch statistics when ``bn_training`` (the caller updates running statistics from the
returned mean and biased variance, as fusedattn.SelectiveKernel does), else the running ones.
"""
import torch
from torch import Tensor

from .. import kernels
from ..backend import uses_triton
from ..kernels.layout import suggested_memory_format
from .registration import define_block
from .validation import acc_dtype, check_branches, check_param


# ---- plain-PyTorch path (CPU) -------------------------------------------------------

def sk_forward_torch(xs, w_reduce, w_select, gamma, beta, running_mean, running_var, training, eps,
                     batch_stats=None):
    """batch_stats(z [B, A]) -> (mean, biased var): where the training statistics come from
    (default: this batch; ops/sync_batchnorm.py: every process's)."""
    P = len(xs)
    B, C = xs[0].shape[:2]
    A = w_reduce.shape[0]
    dt = acc_dtype(xs[0])
    s = sum(x.mean((2, 3), dtype=dt) for x in xs)
    z = s @ w_reduce.reshape(A, C).to(dt).t()
    if training:
        mean, var = batch_stats(z) if batch_stats else (z.mean(0), z.var(0, unbiased=False))
    else:
        mean, var = running_mean.to(dt).clone(), running_var.to(dt).clone()
    u = (z - mean) * torch.rsqrt(var + eps) * gamma.to(dt) + beta.to(dt)
    logit = u.relu() @ w_select.reshape(P * C, A).to(dt).t()
    att = torch.softmax(logit.view(B, P, C), dim=1).reshape(B, P * C)
    y = sum(x.to(dt) * att[:, p * C:(p + 1) * C, None, None] for p, x in enumerate(xs))
    return (y.to(xs[0].dtype).contiguous(memory_format=suggested_memory_format(xs[0])),
            s, z, u, att, mean, var)


def sk_backward_torch(dy, xs, w_reduce, w_select, gamma, eps, training, s, z, u, att, mean, var):
    P = len(xs)
    B, C, H, W = xs[0].shape
    A = w_reduce.shape[0]
    dt = s.dtype
    dyf = dy.to(dt)
    datt = torch.stack([(dyf * x.to(dt)).sum((2, 3)) for x in xs], 1)
    a = att.view(B, P, C)
    dlogit = (a * (datt - (a * datt).sum(1, keepdim=True))).reshape(B, P * C)
    du = (dlogit @ w_select.reshape(P * C, A).to(dt)) * (u > 0)
    inv_std = torch.rsqrt(var + eps)
    zhat = (z - mean) * inv_std
    dbeta, dgamma = du.sum(0), (du * zhat).sum(0)
    dz = gamma.to(dt) * inv_std * (du - dbeta / B - zhat * dgamma / B if training else du)
    coef = (dz @ w_reduce.reshape(A, C).to(dt) / (H * W))[:, :, None, None]
    fmt = suggested_memory_format(xs[0])
    dxs = [(dyf * a[:, p, :, None, None] + coef).to(x.dtype).contiguous(memory_format=fmt)
           for p, x in enumerate(xs)]
    dws = (dlogit.t() @ u.relu()).to(w_select.dtype).reshape(w_select.shape)
    dwr = (dz.t() @ s).to(w_reduce.dtype).reshape(w_reduce.shape)
    return dxs, dwr, dgamma.to(gamma.dtype), dbeta.to(gamma.dtype), dws


# ---- custom ops ----------------------------------------------------------------------

def sk_forward_impl(xs: list[Tensor], w_reduce: Tensor, w_select: Tensor, bn_weight: Tensor, bn_bias: Tensor,
                    running_mean: Tensor | None, running_var: Tensor | None, bn_training: bool, eps: float
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(y [B, C, H, W], s [B, C], z [B, A], u [B, A], att [B, P*C], mean [A], var [A])."""
    impl = kernels.sk_forward if uses_triton(xs[0]) else sk_forward_torch
    return impl(xs, w_reduce, w_select, bn_weight, bn_bias, running_mean, running_var, bn_training, eps)


def sk_backward_impl(dy: Tensor, xs: list[Tensor], w_reduce: Tensor, w_select: Tensor, bn_weight: Tensor,
                     eps: float, bn_training: bool, s: Tensor, z: Tensor, u: Tensor, att: Tensor,
                     mean: Tensor, var: Tensor) -> list[Tensor]:
    """[dx_0, ..., dx_{P-1}, dw_reduce, dbn_weight, dbn_bias, dw_select]."""
    impl = kernels.sk_backward if uses_triton(xs[0]) else sk_backward_torch
    dxs, dwr, dgamma, dbeta, dws = impl(dy, xs, w_reduce, w_select, bn_weight, eps, bn_training,
                                        s, z, u, att, mean, var)
    return [*dxs, dwr, dgamma, dbeta, dws]


def _setup_context(ctx, inputs, output):
    xs, w_reduce, w_select, bn_weight, _, _, _, bn_training, eps = inputs
    _, s, z, u, att, mean, var = output
    ctx.n_paths, ctx.bn_training, ctx.eps = len(xs), bn_training, eps
    ctx.save_for_backward(*xs, w_reduce, w_select, bn_weight, s, z, u, att, mean, var)


def _gradients(ctx, run, dy, *_unused):
    P = ctx.n_paths
    xs, rest = list(ctx.saved_tensors[:P]), ctx.saved_tensors[P:]
    grads = run(dy, xs, rest[0], rest[1], rest[2], ctx.eps, ctx.bn_training, *rest[3:])
    dxs, (dwr, dgamma, dbeta, dws) = grads[:P], grads[P:]
    return list(dxs), dwr, dws, dgamma, dbeta, None, None, None, None


sk_block = define_block("sk", sk_forward_impl, sk_backward_impl, _setup_context, _gradients, sk_forward_torch,
                        result=lambda out: (out[0], out[5], out[6]))


# ---- functional API ------------------------------------------------------------------

def sk_attention(paths, fc_reduce_weight: Tensor, bn_weight: Tensor, bn_bias: Tensor, fc_select_weight: Tensor,
                 running_mean: Tensor | None = None, running_var: Tensor | None = None,
                 bn_training: bool = True, eps: float = 1e-5, return_bn_stats: bool = False):
    """SK's attention tail on the branch outputs ``paths``: a list of P tensors [B, C, H, W]
    (same shape, dtype, device) or one stacked tensor [B, P, C, H, W] (timm's layout).
    fc_reduce_weight [A, C(,1,1)], BatchNorm bn_weight/bn_bias [A] (batch statistics when
    bn_training, else running_mean/running_var [A]), fc_select_weight [P*C, A(,1,1)].

    Returns y = sum_p att_p * x_p [B, C, H, W], or (y, bn_mean, bn_var) with return_bn_stats
    (the statistics BN normalised with: batch mean and biased variance in training).
    """
    if isinstance(paths, Tensor):
        if paths.dim() != 5:
            raise ValueError(f"paths must be a list of [B, C, H, W] tensors or one stacked [B, P, C, H, W] "
                             f"tensor, got shape {tuple(paths.shape)}")
        paths = paths.unbind(1)
    paths = check_branches(paths, "paths")
    x, P = paths[0], len(paths)
    B, C = x.shape[:2]
    if not isinstance(fc_reduce_weight, Tensor) or fc_reduce_weight.dim() not in (2, 4):
        raise ValueError("fc_reduce_weight must be a [A, C] or [A, C, 1, 1] tensor")
    A = fc_reduce_weight.shape[0]
    tail = (1, 1) if fc_reduce_weight.dim() == 4 else ()
    check_param(fc_reduce_weight, "fc_reduce_weight", x, (A, C) + tail)
    check_param(fc_select_weight, "fc_select_weight", x, (P * C, A) + tail)
    for t, name in ((bn_weight, "bn_weight"), (bn_bias, "bn_bias"), (running_mean, "running_mean"),
                    (running_var, "running_var")):
        check_param(t, name, x, (A,))
    if bn_weight is None or bn_bias is None:
        raise ValueError("bn_weight and bn_bias are required (SK's BatchNorm is affine)")
    if bn_training and B == 1:
        raise ValueError(f"Expected more than 1 value per channel when training SK's BatchNorm, got a batch "
                         f"of 1 (paths[0] has shape {tuple(x.shape)}); use eval() or a larger batch")
    if not bn_training and (running_mean is None or running_var is None):
        raise ValueError("BatchNorm without batch statistics needs running_mean and running_var")
    stats = (None, None) if bn_training else (running_mean, running_var)
    out = sk_block(list(paths), fc_reduce_weight, fc_select_weight, bn_weight, bn_bias, *stats,
                   bool(bn_training), float(eps))
    return out if return_bn_stats else out[0]
