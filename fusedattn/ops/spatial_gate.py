"""CBAM's spatial gate on the [B, 2, H, W] maps (1/C of x's size), in plain PyTorch:

    z  = conv_kxk(maps in the module's order) (+ bias)          [B, 1, H, W]
    u  = BatchNorm(z)   (optional; batch statistics in training)
    sa = sigmoid(u)

The plain-PyTorch path of the CBAM op (CPU tensors, ONNX export) and the spec of the Triton
kernels (fusedattn.kernels.spatial_gate, same signatures: tests/test_spatial_gate.py), forward
and an explicit backward.
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class SpatialParams(NamedTuple):
    conv_weight: Tensor            # [1, 2, k, k]
    conv_bias: Tensor | None       # [1]
    bn_weight: Tensor | None       # [1]
    bn_bias: Tensor | None         # [1]
    running_mean: Tensor | None    # [1]
    running_var: Tensor | None     # [1]
    use_bn: bool
    bn_training: bool              # normalise with batch statistics
    eps: float
    max_first: bool                # maps ordered [max, mean] (CBAM authors' code)


def _conv(maps: Tensor, p: SpatialParams) -> Tensor:
    dt = maps.dtype
    k = p.conv_weight.shape[-1]
    bias = None if p.conv_bias is None else p.conv_bias.to(dt)
    return F.conv2d(maps.flip(1) if p.max_first else maps, p.conv_weight.to(dt), bias, padding=k // 2)


def _norm_stats(z: Tensor, p: SpatialParams, batch_stats=None) -> tuple[Tensor, Tensor]:
    if p.bn_training:
        if batch_stats is not None:
            return batch_stats(z.reshape(-1, 1))
        return z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=False)
    return p.running_mean.to(z.dtype), p.running_var.to(z.dtype)


def _affine(p: SpatialParams, dt) -> tuple[Tensor | float, Tensor | float]:
    if p.bn_weight is None:
        return 1.0, 0.0
    return p.bn_weight.to(dt).view(1, 1, 1, 1), p.bn_bias.to(dt).view(1, 1, 1, 1)


def spatial_gate(maps: Tensor, p: SpatialParams, batch_stats=None) -> tuple[Tensor, Tensor, Tensor]:
    """maps [B, 2, H, W] = (mean_c, max_c) -> (sa [B, 1, H, W], mean [1], var [1]): the
    statistics BatchNorm normalised with (biased batch variance in training; zeros without BN).
    batch_stats(z rows [N, 1]) -> (mean, var): where training statistics come from (default: this batch)."""
    z = _conv(maps, p)
    if not p.use_bn:
        return torch.sigmoid(z), z.new_zeros(1), z.new_zeros(1)
    mean, var = _norm_stats(z, p, batch_stats)
    gamma, beta = _affine(p, z.dtype)
    zhat = (z - mean.view(1, 1, 1, 1)) * torch.rsqrt(var.view(1, 1, 1, 1) + p.eps)
    return torch.sigmoid(zhat * gamma + beta), mean.clone(), var.clone()  # never alias the buffers


def spatial_gate_forward(maps: Tensor, *params) -> tuple[Tensor, Tensor, Tensor]:
    """spatial_gate with SpatialParams' fields as arguments (the Triton launcher's signature)."""
    return spatial_gate(maps, SpatialParams(*params))


def spatial_gate_backward(dsa: Tensor, ties: Tensor, maps: Tensor, sa: Tensor, mean: Tensor, var: Tensor,
                          C: int, *params):
    """dsa = dL/dsa, ties = #channels at the max map ([B, 1, H, W] each) -> (k_mean = dL/dmean_map / C,
    k_max = dL/dmax_map / ties, dconv_weight, dconv_bias, dbn_weight, dbn_bias), absent ones None,
    for the forward that normalised with ``mean``, ``var`` (SpatialParams' fields follow C).

    Explicit chain rule (no autograd inside the op): sigmoid, BatchNorm (through the batch
    statistics in training, as nn.BatchNorm2d), then the conv's input and weight gradients.
    """
    p = SpatialParams(*params)
    dt = maps.dtype
    du = dsa * sa * (1 - sa)
    dbn_weight = dbn_bias = None
    if p.use_bn:
        rstd = torch.rsqrt(var.view(1, 1, 1, 1) + p.eps)
        zhat = (_conv(maps, p) - mean.view(1, 1, 1, 1)) * rstd
        gamma, _ = _affine(p, dt)
        if p.bn_weight is not None:
            dbn_weight = (du * zhat).sum().reshape(1).to(p.bn_weight.dtype)
            dbn_bias = du.sum().reshape(1).to(p.bn_bias.dtype)
        dzhat = du * gamma
        if p.bn_training:
            dz = rstd * (dzhat - dzhat.mean() - zhat * (dzhat * zhat).mean())
        else:
            dz = dzhat * rstd
    else:
        dz = du
    m = maps.flip(1) if p.max_first else maps
    w = p.conv_weight.to(dt)
    pad = w.shape[-1] // 2
    dm = torch.nn.grad.conv2d_input(m.shape, w, dz, padding=pad)
    dconv_weight = torch.nn.grad.conv2d_weight(m, w.shape, dz, padding=pad).to(p.conv_weight.dtype)
    dconv_bias = None if p.conv_bias is None else dz.sum().reshape(1).to(p.conv_bias.dtype)
    dm = dm.flip(1) if p.max_first else dm
    return dm[:, 0:1] / C, dm[:, 1:2] / ties, dconv_weight, dconv_bias, dbn_weight, dbn_bias
