"""Reference CBAM blocks in plain PyTorch: the four layouts fusedattn.CBAM loads, and Ultralytics'
CBAM (fusedattn.UltralyticsCBAM: a one-layer channel gate on the mean alone, no spatial norm).

All compute channel attention then spatial attention:
    ca = sigmoid(mlp(mean_hw x) + mlp(max_hw x)),  x1 = x * ca
    sa = sigmoid([BN](conv_kxk(maps of x1))),       y = x1 * sa
Channel maxima are taken with amax (tied maxima share the gradient evenly).
"""
import torch
from torch import nn

from .activations import Sigmoid
from .channels import make_divisible
from .se import ChannelAttention


class ChannelAttn(nn.Module):
    """timm's ChannelAttn: shared 1x1-conv MLP on the average- and max-pooled vectors."""

    def __init__(self, channels, rd_ratio=1.0 / 16, rd_channels=None, rd_divisor=1, mlp_bias=False):
        super().__init__()
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=mlp_bias)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=mlp_bias)
        self.gate = Sigmoid()

    def forward(self, x):
        x_avg = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        x_max = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))
        return x * self.gate(x_avg + x_max)


class ConvBn(nn.Module):
    """timm's ConvNormAct(2, 1, k, apply_act=False): conv without bias, then BatchNorm2d(1)."""

    def __init__(self, kernel_size=7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        return self.bn(self.conv(x))


class SpatialAttn(nn.Module):
    """timm's SpatialAttn: [mean_c, max_c] maps -> conv + BN -> sigmoid."""

    def __init__(self, kernel_size=7):
        super().__init__()
        self.conv = ConvBn(kernel_size)
        self.gate = Sigmoid()

    def forward(self, x):
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * self.gate(self.conv(maps))


class CbamModule(nn.Module):
    """timm's CbamModule. state_dict: channel.fc1.weight [rd, C, 1, 1], channel.fc2.weight,
    spatial.conv.conv.weight [1, 2, k, k], spatial.conv.bn.* (rd_divisor=1 by default)."""

    def __init__(self, channels, rd_ratio=1.0 / 16, rd_channels=None, rd_divisor=1,
                 spatial_kernel_size=7, mlp_bias=False):
        super().__init__()
        self.channel = ChannelAttn(channels, rd_ratio, rd_channels, rd_divisor, mlp_bias)
        self.spatial = SpatialAttn(spatial_kernel_size)

    def forward(self, x):
        return self.spatial(self.channel(x))


class TutorialCBAM(nn.Module):
    """Layout (a), common in tutorials: channelattention.fc.{0,2}.weight (1x1 convs, no bias),
    spatialattention.conv1.weight [1, 2, k, k] (no bias, no BN), maps [mean, max]."""

    def __init__(self, in_channels, ratio=16, kernel_size=3):
        super().__init__()
        self.channelattention = nn.Module()
        self.channelattention.fc = nn.Sequential(
            nn.Conv2d(in_channels, in_channels // ratio, 1, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels // ratio, in_channels, 1, bias=False))
        self.spatialattention = nn.Module()
        self.spatialattention.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x):
        fc = self.channelattention.fc
        x = x * torch.sigmoid(fc(x.mean((2, 3), keepdim=True)) + fc(x.amax((2, 3), keepdim=True)))
        maps = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatialattention.conv1(maps))


class ConvBiasCBAM(nn.Module):
    """Layout (b): fc1/fc2 1x1 convs with bias, conv_after_concat (k=3, bias, no BN)."""

    def __init__(self, channels, reduction=16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)
        self.conv_after_concat = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x):
        mlp = lambda v: self.fc2(self.relu(self.fc1(v)))  # noqa: E731
        x = x * torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
        maps = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.conv_after_concat(maps))


class OriginalCBAM(nn.Module):
    """Layout (c), the CBAM authors' code: ChannelGate.mlp = (Flatten, Linear(C, C // r), ReLU,
    Linear(C // r, C)) with biases; SpatialGate.spatial = conv 7x7 (no bias) + BatchNorm2d(1,
    momentum=0.01) on maps in the order [max, mean]."""

    def __init__(self, gate_channels, reduction_ratio=16, kernel_size=7):
        super().__init__()
        rd = gate_channels // reduction_ratio
        self.ChannelGate = nn.Module()
        self.ChannelGate.mlp = nn.Sequential(nn.Flatten(), nn.Linear(gate_channels, rd), nn.ReLU(),
                                             nn.Linear(rd, gate_channels))
        self.SpatialGate = nn.Module()
        self.SpatialGate.spatial = nn.Module()
        self.SpatialGate.spatial.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.SpatialGate.spatial.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01, affine=True)

    def forward(self, x):
        mlp = self.ChannelGate.mlp
        att = mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True))
        x = x * torch.sigmoid(att)[:, :, None, None]
        maps = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        s = self.SpatialGate.spatial
        return x * torch.sigmoid(s.bn(s.conv(maps)))


class SpatialAttention(nn.Module):
    """Ultralytics' SpatialAttention: x * sigmoid(cv1([mean_c, max_c])), cv1 = Conv2d(2, 1, k,
    padding k // 2, no bias), k 3 or 7; no norm."""

    def __init__(self, kernel_size=7):
        super().__init__()
        if kernel_size not in (3, 7):
            raise ValueError(f"kernel size must be 3 or 7, got {kernel_size}")
        self.cv1 = nn.Conv2d(2, 1, kernel_size, padding=3 if kernel_size == 7 else 1, bias=False)
        self.act = nn.Sigmoid()

    def forward(self, x):
        return x * self.act(self.cv1(torch.cat([torch.mean(x, 1, keepdim=True), torch.max(x, 1, keepdim=True)[0]], 1)))


class UltralyticsCBAM(nn.Module):
    """Ultralytics' CBAM (YOLO): ChannelAttention (one C -> C 1x1 conv with bias on the mean,
    sigmoid; no max pool) then SpatialAttention. state_dict: channel_attention.fc.weight
    [C, C, 1, 1], channel_attention.fc.bias [C], spatial_attention.cv1.weight [1, 2, k, k]."""

    def __init__(self, c1, kernel_size=7):
        super().__init__()
        self.channel_attention = ChannelAttention(c1)
        self.spatial_attention = SpatialAttention(kernel_size)

    def forward(self, x):
        return self.spatial_attention(self.channel_attention(x))
