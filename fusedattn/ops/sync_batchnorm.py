"""BatchNorm statistics over every process of a torch.distributed group (CPU and CUDA, any backend):
the synchronized mode of the blocks with a BatchNorm inside (CBAM's spatial gate, SK's attention).

``global_batch_stats(z, group)`` gives the mean and biased variance of z's columns over all ranks'
rows (two all-reduces of [A + 1] and [A] values); its backward all-reduces the gradients of the
statistics, so every rank's input gradient is the one a single process on the concatenated batch
would compute (what torch.nn.SyncBatchNorm does, which runs on GPUs only).
``cbam_synchronized`` and ``sk_synchronized`` are the two blocks in plain PyTorch around it: the
synchronized mode is not fused (the kernels compute the statistics of one process's batch).
"""
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .cpu_math import channel_attention
from .validation import acc_dtype, in_layout_of


def synchronizing(group) -> bool:
    """True if a synchronized block should all-reduce now: torch.distributed initialised and the
    group (None: the default group) holds more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


class _GlobalBatchStats(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, group):
        count_and_sums = torch.cat([z.new_full((1,), z.shape[0]), z.sum(0)])
        dist.all_reduce(count_and_sums, group=group)
        count, mean = count_and_sums[0], count_and_sums[1:] / count_and_sums[0]
        squares = (z - mean).square().sum(0)
        dist.all_reduce(squares, group=group)
        ctx.save_for_backward(z, mean, count)
        ctx.group = group
        return mean, squares / count, count

    @staticmethod
    def backward(ctx, dmean, dvar, _dcount):
        z, mean, count = ctx.saved_tensors
        grads = torch.cat([torch.zeros_like(mean) if dmean is None else dmean,
                           torch.zeros_like(mean) if dvar is None else dvar])
        dist.all_reduce(grads, group=ctx.group)  # every rank's loss depends on the shared statistics
        dmean, dvar = grads.chunk(2)
        return (dmean + 2.0 * dvar * (z - mean)) / count, None


def global_batch_stats(z: Tensor, group=None) -> tuple[Tensor, Tensor, int]:
    """z [N, A] (this rank's rows) -> (mean [A], biased variance [A], N summed over the group)."""
    mean, var, count = _GlobalBatchStats.apply(z, group)
    return mean, var, int(count.item())


def synchronized_norm(z: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, group=None):
    """BatchNorm's training forward on the rows of z [N, A] with the group's statistics:
    (u [N, A], mean [A], biased var [A], N over the group) - the caller updates running statistics."""
    mean, var, count = global_batch_stats(z, group)
    u = (z - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        u = u * weight.to(z.dtype) + bias.to(z.dtype)
    return u, mean.detach(), var.detach(), count


def cbam_synchronized(x: Tensor, w1, b1, w2, b2, conv_weight, conv_bias, bn_weight, bn_bias, eps: float,
                      max_first: bool, group=None):
    """CBAM in plain PyTorch with its spatial BatchNorm on the group's statistics:
    (y, mean [1], var [1], count)."""
    dt = acc_dtype(x)
    x1 = channel_attention(x, w1, b1, w2, b2, dt)
    maps = [x1.mean(1, keepdim=True), x1.amax(1, keepdim=True)]
    k = conv_weight.shape[-1]
    s = F.conv2d(torch.cat(maps[::-1] if max_first else maps, 1), conv_weight.to(dt),
                 None if conv_bias is None else conv_bias.to(dt), padding=k // 2)
    u, mean, var, count = synchronized_norm(s.reshape(-1, 1), bn_weight, bn_bias, eps, group)
    return in_layout_of(x, x1 * u.view_as(s).sigmoid()), mean, var, count


def sk_synchronized(paths: list[Tensor], w_reduce, bn_weight, bn_bias, w_select, eps: float, group=None):
    """SK's attention tail in plain PyTorch with its BatchNorm on the group's statistics:
    (y, mean [A], var [A], count)."""
    P = len(paths)
    B, C = paths[0].shape[:2]
    A = w_reduce.shape[0]
    dt = acc_dtype(paths[0])
    s = sum(p.mean((2, 3), dtype=dt) for p in paths)
    u, mean, var, count = synchronized_norm(s @ w_reduce.reshape(A, C).to(dt).t(), bn_weight, bn_bias, eps, group)
    att = torch.softmax((u.relu() @ w_select.reshape(P * C, A).to(dt).t()).view(B, P, C), dim=1)
    y = sum(p.to(dt) * att[:, i, :, None, None] for i, p in enumerate(paths))
    return in_layout_of(paths[0], y), mean, var, count
