"""Reference SE blocks in plain PyTorch: the spec the fused SE is tested against."""
from torch import nn

from .activations import Sigmoid
from .channels import make_divisible


class SEModule(nn.Module):
    """timm's SEModule: y = x * sigmoid(fc2(relu(fc1(mean_hw(x))))).

    fc1 = Conv2d(C, rd, 1), fc2 = Conv2d(rd, C, 1) with rd = make_divisible(C * rd_ratio,
    rd_divisor, round_limit=0) unless rd_channels is given. add_maxpool pools
    0.5 * mean + 0.5 * max. state_dict: fc1.weight [rd, C, 1, 1], fc1.bias [rd],
    fc2.weight [C, rd, 1, 1], fc2.bias [C].
    """

    def __init__(self, channels, rd_ratio=1.0 / 16, rd_channels=None, rd_divisor=8,
                 add_maxpool=False, bias=True):
        super().__init__()
        self.add_maxpool = add_maxpool
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=bias)
        self.bn = nn.Identity()  # timm's norm_layer=None
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=bias)
        self.gate = Sigmoid()

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        if self.add_maxpool:
            x_se = 0.5 * x_se + 0.5 * x.amax((2, 3), keepdim=True)
        x_se = self.fc2(self.act(self.bn(self.fc1(x_se))))
        return x * self.gate(x_se)


class LinearSE(nn.Module):
    """The SE layout common in tutorials: fc = Sequential(Linear(C, C // r, bias=False),
    ReLU, Linear(C // r, C, bias=False), Sigmoid). state_dict: fc.0.weight [rd, C],
    fc.2.weight [C, rd]."""

    def __init__(self, in_channels, reduction=16, bias=False):
        super().__init__()
        rd = max(in_channels // reduction, 1)
        self.fc = nn.Sequential(
            nn.Linear(in_channels, rd, bias=bias), nn.ReLU(inplace=True),
            nn.Linear(rd, in_channels, bias=bias), nn.Sigmoid())

    def forward(self, x):
        b, c = x.shape[:2]
        return x * self.fc(x.mean((2, 3))).view(b, c, 1, 1)
