"""Reference SE blocks in plain PyTorch: the spec the fused SE is tested against."""
from torch import nn

from .activations import make_activation
from .channels import make_divisible


class SEModule(nn.Module):
    """timm's SEModule: y = x * gate(fc2(act(fc1(mean_hw(x))))), act_layer ReLU and gate_layer
    sigmoid by default (a name, a module class or a module).

    fc1 = Conv2d(C, rd, 1), fc2 = Conv2d(rd, C, 1) with rd = make_divisible(C * rd_ratio,
    rd_divisor, round_limit=0) unless rd_channels is given. add_maxpool pools
    0.5 * mean + 0.5 * max. state_dict: fc1.weight [rd, C, 1, 1], fc1.bias [rd],
    fc2.weight [C, rd, 1, 1], fc2.bias [C].
    """

    def __init__(self, channels, rd_ratio=1.0 / 16, rd_channels=None, rd_divisor=8,
                 add_maxpool=False, bias=True, act_layer=nn.ReLU, gate_layer="sigmoid"):
        super().__init__()
        self.add_maxpool = add_maxpool
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=bias)
        self.bn = nn.Identity()  # timm's norm_layer=None
        self.act = make_activation(act_layer)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=bias)
        self.gate = make_activation(gate_layer)

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


class SqueezeExcite(nn.Module):
    """timm's SqueezeExcite of the EfficientNet / MobileNet blocks: y = x * gate(conv_expand(act1(
    conv_reduce(mean_hw(x))))), rd = round(in_chs * rd_ratio) unless rd_channels is given.
    state_dict: conv_reduce.weight [rd, C, 1, 1], conv_reduce.bias, conv_expand.weight, conv_expand.bias."""

    def __init__(self, in_chs, rd_ratio=0.25, rd_channels=None, act_layer=nn.ReLU, gate_layer=nn.Sigmoid):
        super().__init__()
        rd_channels = rd_channels or round(in_chs * rd_ratio)
        self.conv_reduce = nn.Conv2d(in_chs, rd_channels, 1)
        self.act1 = make_activation(act_layer)
        self.conv_expand = nn.Conv2d(rd_channels, in_chs, 1)
        self.gate = make_activation(gate_layer)

    def forward(self, x):
        return x * self.gate(self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True)))))


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation: y = scale_activation(fc2(activation(fc1(avgpool(x))))) * x.
    state_dict: fc1.weight [squeeze, C, 1, 1], fc1.bias, fc2.weight, fc2.bias."""

    def __init__(self, input_channels, squeeze_channels, activation=nn.ReLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, x):
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x))))) * x


class EffectiveSEModule(nn.Module):
    """timm's EffectiveSEModule (eSE, VoVNet): y = x * gate(fc(pool(x))), fc = Conv2d(C, C, 1) with bias,
    gate hard sigmoid by default; add_maxpool pools 0.5 * mean + 0.5 * max. state_dict: fc.weight
    [C, C, 1, 1], fc.bias [C]."""

    def __init__(self, channels, add_maxpool=False, gate_layer="hard_sigmoid"):
        super().__init__()
        self.add_maxpool = add_maxpool
        self.fc = nn.Conv2d(channels, channels, kernel_size=1)
        self.gate = make_activation(gate_layer)

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        if self.add_maxpool:
            x_se = 0.5 * x_se + 0.5 * x.amax((2, 3), keepdim=True)
        return x * self.gate(self.fc(x_se))


class ChannelAttention(nn.Module):
    """Ultralytics' ChannelAttention (YOLO): y = x * sigmoid(fc(avgpool(x))), fc = Conv2d(C, C, 1) with
    bias. state_dict: fc.weight [C, C, 1, 1], fc.bias [C]."""

    def __init__(self, channels):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, 1, 0, bias=True)
        self.act = nn.Sigmoid()

    def forward(self, x):
        return x * self.act(self.fc(self.pool(x)))
