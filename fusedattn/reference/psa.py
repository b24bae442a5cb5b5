"""Reference PSA (EPSANet's PSAModule) in plain PyTorch: the spec fusedattn.PSA is tested against."""
import torch
from torch import nn


class SEWeightModule(nn.Module):
    """EPSANet's SE weight: sigmoid(fc2(relu(fc1(mean_hw x)))), 1x1 convs with bias, reduction 16."""

    def __init__(self, channels, reduction=16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0)

    def forward(self, x):
        return torch.sigmoid(self.fc2(self.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class PSAModule(nn.Module):
    """EPSANet's PSAModule: four grouped convs (kernels [3, 5, 7, 9], groups [1, 4, 8, 16], each to
    planes // 4 channels, no bias), one shared SE weight module, softmax across the four splits
    per channel, and the weighted splits concatenated in REVERSE order (split 4 first), as the
    published code does. state_dict: conv_1..conv_4.weight, se.fc1.{weight,bias}, se.fc2.{weight,bias}."""

    def __init__(self, inplans, planes, conv_kernels=(3, 5, 7, 9), stride=1, conv_groups=(1, 4, 8, 16)):
        super().__init__()
        for i, (k, g) in enumerate(zip(conv_kernels, conv_groups)):
            setattr(self, f"conv_{i + 1}", nn.Conv2d(inplans, planes // 4, kernel_size=k, padding=k // 2,
                                                     stride=stride, groups=g, bias=False))
        self.se = SEWeightModule(planes // 4)
        self.split_channel = planes // 4

    def splits(self, x) -> list:
        """The four branch conv outputs [B, planes // 4, H', W']."""
        return [self.conv_1(x), self.conv_2(x), self.conv_3(x), self.conv_4(x)]

    def forward(self, x):
        return psa_attention_reference(self.splits(x), self.se)


def psa_attention_reference(splits, se: SEWeightModule):
    """PSA's attention tail as EPSANet computes it: P splits [B, C, H, W] -> [B, P*C, H, W]."""
    b, c = splits[0].shape[:2]
    p = len(splits)
    feats = torch.cat(splits, dim=1).view(b, p, c, *splits[0].shape[2:])
    attention = torch.cat([se(s) for s in splits], dim=1).view(b, p, c, 1, 1)
    weighted = feats * torch.softmax(attention, dim=1)
    return torch.cat([weighted[:, i] for i in reversed(range(p))], dim=1)
