"""Reference SK (timm SelectiveKernel, SelectiveKernelAttn) in plain PyTorch: the spec
fusedattn.SelectiveKernel is tested against."""
import torch
from torch import nn

from .channels import make_divisible


def conv_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """timm's symmetric 'same'-style padding of its conv layers."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


class ConvNormAct(nn.Module):
    """timm's ConvNormAct as SK's paths use it: conv (no bias) -> BatchNorm -> act.
    state_dict: conv.weight, bn.{weight, bias, running_mean, running_var, num_batches_tracked}."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, groups=1,
                 act_layer=nn.ReLU, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=conv_padding(kernel_size, stride, dilation), dilation=dilation,
                              groups=groups, bias=False)
        self.bn = norm_layer(out_channels)
        self.act = act_layer(inplace=True) if act_layer is not None else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class SelectiveKernelAttn(nn.Module):
    """timm's SK attention: stacked paths [B, P, C, H, W] -> softmax weights [B, P, C, 1, 1].

    s = mean_hw(sum_p x_p) -> fc_reduce (1x1, no bias) -> BatchNorm2d -> ReLU -> fc_select
    (1x1 to P*C, no bias) -> softmax across the P paths. state_dict: fc_reduce.weight [A, C, 1, 1],
    bn.*, fc_select.weight [P*C, A, 1, 1]."""

    def __init__(self, channels, num_paths=2, attn_channels=32):
        super().__init__()
        self.num_paths = num_paths
        self.fc_reduce = nn.Conv2d(channels, attn_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(attn_channels)
        self.act = nn.ReLU(inplace=True)
        self.fc_select = nn.Conv2d(attn_channels, channels * num_paths, kernel_size=1, bias=False)

    def forward(self, x):
        assert x.shape[1] == self.num_paths
        x = x.sum(1).mean((2, 3), keepdim=True)
        x = self.fc_select(self.act(self.bn(self.fc_reduce(x))))
        b, pc, h, w = x.shape
        return torch.softmax(x.view(b, self.num_paths, pc // self.num_paths, h, w), dim=1)


def sk_paths_config(kernel_size, dilation: int, keep_3x3: bool) -> tuple[list[int], list[int]]:
    """timm's per-path (kernel sizes, dilations): default [3, 5]; with keep_3x3, a k x k path
    becomes a 3x3 conv with dilation (k - 1) // 2."""
    kernel_size = kernel_size or [3, 5]
    if not isinstance(kernel_size, (list, tuple)):
        kernel_size = [kernel_size] * 2
    kernel_size = list(kernel_size)
    for k in kernel_size:
        if k < 3 or k % 2 == 0:
            raise ValueError(f"SelectiveKernel kernel sizes must be odd and >= 3, got {kernel_size}")
    if keep_3x3:
        return [3] * len(kernel_size), [dilation * (k - 1) // 2 for k in kernel_size]
    return kernel_size, [dilation] * len(kernel_size)


class SelectiveKernel(nn.Module):
    """timm's SelectiveKernel: P ConvNormAct paths (on input channel splits with split_input),
    stacked [B, P, C, H, W], weighted by SelectiveKernelAttn and summed over the paths.
    state_dict: paths.{i}.conv.weight, paths.{i}.bn.*, attn.fc_reduce.weight, attn.bn.*,
    attn.fc_select.weight."""

    def __init__(self, in_channels, out_channels=None, kernel_size=None, stride=1, dilation=1, groups=1,
                 rd_ratio=1.0 / 16, rd_channels=None, rd_divisor=8, keep_3x3=True, split_input=True,
                 act_layer=nn.ReLU, norm_layer=nn.BatchNorm2d):
        super().__init__()
        out_channels = out_channels or in_channels
        kernels, dilations = sk_paths_config(kernel_size, dilation, keep_3x3)
        self.num_paths = len(kernels)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.split_input = split_input
        if split_input:
            assert in_channels % self.num_paths == 0
            in_channels = in_channels // self.num_paths
        groups = min(out_channels, groups)
        self.paths = nn.ModuleList([
            ConvNormAct(in_channels, out_channels, k, stride=stride, dilation=d, groups=groups,
                        act_layer=act_layer, norm_layer=norm_layer)
            for k, d in zip(kernels, dilations)])
        attn_channels = rd_channels or make_divisible(out_channels * rd_ratio, divisor=rd_divisor)
        self.attn = SelectiveKernelAttn(out_channels, self.num_paths, attn_channels)

    def path_outputs(self, x) -> list:
        """The P branch outputs [B, C, H, W] (each path on its input split with split_input)."""
        if self.split_input:
            x_split = torch.split(x, self.in_channels // self.num_paths, 1)
            return [op(x_split[i]) for i, op in enumerate(self.paths)]
        return [op(x) for op in self.paths]

    def forward(self, x):
        return sk_attention_reference(self.path_outputs(x), self.attn)


def sk_attention_reference(paths, attn: SelectiveKernelAttn):
    """SK's attention tail as timm computes it: P paths [B, C, H, W] -> [B, C, H, W]."""
    x = torch.stack(list(paths), dim=1)
    return (x * attn(x)).sum(dim=1)
