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
from torch import Tensor

from .cpu_math import cbam_math
from .sk import sk_forward_torch


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


class GroupStats:
    """batch_stats hook for the plain math (sk_forward_torch, cbam_math): the group's statistics
    of z's rows; keeps the group's row count for the running-variance update."""

    def __init__(self, group=None):
        self.group, self.count = group, 0

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor]:
        mean, var, self.count = global_batch_stats(z, self.group)
        return mean, var


def cbam_synchronized(x: Tensor, w1, b1, w2, b2, conv_weight, conv_bias, bn_weight, bn_bias, eps: float,
                      max_first: bool, group=None):
    """CBAM's plain math with its spatial BatchNorm on the group's statistics:
    (y, mean [1], var [1], count)."""
    stats = GroupStats(group)
    y, mean, var = cbam_math(x, w1, b1, w2, b2, conv_weight, conv_bias, bn_weight, bn_bias, None, None,
                             True, True, eps, max_first, batch_stats=stats)
    return y, mean, var, stats.count


def sk_synchronized(paths: list[Tensor], w_reduce, bn_weight, bn_bias, w_select, eps: float, group=None):
    """SK's attention tail in plain math with its BatchNorm on the group's statistics:
    (y, mean [A], var [A], count)."""
    stats = GroupStats(group)
    out = sk_forward_torch(paths, w_reduce, w_select, bn_weight, bn_bias, None, None, True, eps, batch_stats=stats)
    return out[0], out[5].detach(), out[6].detach(), stats.count
