"""Reference Coordinate Attention (Hou, Zhou and Feng, CVPR 2021) in plain PyTorch: timm's
``CoordAttn`` layout and the authors' ``CoordAtt``.

    x_h[b, c, h] = mean_w x,  x_w[b, c, w] = mean_h x
    t = act(bn1(conv1([x_h, x_w])))            over the H + W positions, conv1: C -> rd (1x1)
    a_h = gate(conv_h(t[:, :, :H])),  a_w = gate(conv_w(t[:, :, H:]))     rd -> C (1x1)
    y = x * a_h[b, c, h] * a_w[b, c, w]  (+ x with has_skip)

bn1's batch statistics in train() are over all samples and all H + W positions.
"""
import torch
from torch import nn

from .activations import make_activation
from .channels import make_divisible


class CoordAttn(nn.Module):
    """timm's CoordAttn: conv1 (bias option), bn1 (BatchNorm2d or none), act (Hardswish by
    default), conv_h / conv_w, gate (sigmoid or hard sigmoid), has_skip. rd = make_divisible(C *
    rd_ratio * se_factor, rd_divisor, round_limit=0) unless rd_channels is given."""

    def __init__(self, channels, rd_ratio=1.0 / 16, rd_channels=None, rd_divisor=8, se_factor=2 / 3, bias=False,
                 act_layer=nn.Hardswish, norm_layer=nn.BatchNorm2d, gate_layer="sigmoid", has_skip=False):
        super().__init__()
        self.has_skip = has_skip
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio * se_factor, rd_divisor, round_limit=0.0)
        self.conv1 = nn.Conv2d(channels, rd_channels, 1, bias=bias)
        self.bn1 = norm_layer(rd_channels) if norm_layer is not None else nn.Identity()
        self.act = make_activation(act_layer)
        self.conv_h = nn.Conv2d(rd_channels, channels, 1, bias=bias)
        self.conv_w = nn.Conv2d(rd_channels, channels, 1, bias=bias)
        self.gate = make_activation(gate_layer)

    def forward(self, x):
        H, W = x.shape[2:]
        t = torch.cat([x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(-1, -2)], dim=2)
        t = self.act(self.bn1(self.conv1(t)))
        t_h, t_w = torch.split(t, [H, W], dim=2)
        a_h = self.gate(self.conv_h(t_h))
        a_w = self.gate(self.conv_w(t_w.transpose(-1, -2)))
        out = x * a_w * a_h
        return out + x if self.has_skip else out


class h_sigmoid(nn.Module):  # noqa: N801 - the authors' names
    """relu6(x + 3) / 6"""

    def __init__(self, inplace=True):
        super().__init__()
        self.relu = nn.ReLU6(inplace=inplace)

    def forward(self, x):
        return self.relu(x + 3) / 6


class h_swish(nn.Module):  # noqa: N801
    """x * h_sigmoid(x)"""

    def __init__(self, inplace=True):
        super().__init__()
        self.sigmoid = h_sigmoid(inplace=inplace)

    def forward(self, x):
        return x * self.sigmoid(x)


class CoordAtt(nn.Module):
    """The authors' CoordAtt(inp, oup, reduction=32): mip = max(8, inp // reduction), conv1 /
    conv_h / conv_w with bias, bn1, h_swish, sigmoid gates; oup must equal inp for x * a."""

    def __init__(self, inp, oup, reduction=32):
        super().__init__()
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        mip = max(8, inp // reduction)
        self.conv1 = nn.Conv2d(inp, mip, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = h_swish()
        self.conv_h = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)
        self.conv_w = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)

    def forward(self, x):
        H, W = x.shape[2:]
        x_h = self.pool_h(x)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)
        t = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        t_h, t_w = torch.split(t, [H, W], dim=2)
        a_h = self.conv_h(t_h).sigmoid()
        a_w = self.conv_w(t_w.permute(0, 1, 3, 2)).sigmoid()
        return x * a_w * a_h
