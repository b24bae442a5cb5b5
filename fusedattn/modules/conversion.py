"""Helpers the fused modules share for building themselves from existing modules."""
import torch
from torch import nn


def require(condition: bool, message: str) -> None:
    """Raise ValueError(message) unless condition holds."""
    if not condition:
        raise ValueError(message)


def is_sigmoid(gate) -> bool:
    """True for the sigmoid gate in any spelling timm accepts ('sigmoid', nn.Sigmoid, ...)."""
    return (gate in ("sigmoid", nn.Sigmoid, torch.sigmoid)
            or isinstance(gate, nn.Sigmoid))


def copy_into(new: nn.Module, source: nn.Module) -> nn.Module:
    """Load source's state_dict into new (key remapping is new's business) and give new
    source's device, dtype and train/eval mode."""
    tensors = list(source.parameters()) + list(source.buffers())
    if tensors:
        new = new.to(device=tensors[0].device, dtype=tensors[0].dtype)
    new.load_state_dict(source.state_dict())
    return new.train(source.training)


def update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
    """What nn.BatchNorm2d does to its buffers in training, from the batch ``mean`` and biased
    ``var`` over ``n`` values per channel: unbiased variance, momentum or cumulative average."""
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.mul_(1 - momentum).add_(mean.detach().to(bn.running_mean.dtype), alpha=momentum)
        unbiased = var.detach() * (n / (n - 1))
        bn.running_var.mul_(1 - momentum).add_(unbiased.to(bn.running_var.dtype), alpha=momentum)
