"""Bundled ResNet-18/34/50 with an attention block per residual block, for benchmarks and for
users who build their own networks.

    model = fusedattn.models.resnet50(attn="se")              # fused (default)
    ref = fusedattn.models.resnet50(attn="se", fused=False)   # timm-style reference modules

torchvision's layout (stem conv1/bn1/relu/maxpool, layer1..layer4, avgpool, fc; no softmax in
forward), with the attention as ``attn`` in every block, applied to the residual branch before
the addition, as in SE-/ECA-/CBAM-ResNets. Fused and reference models have the same state_dict.
With fused SE or ECA the block's tail  relu(attn(out) + identity)  is one fused op (the residual
epilogue); CBAM, Coordinate Attention (timm's CoordAttn) and SimAM are fused as blocks, then added
and activated by PyTorch.
"""
from torch import nn

from .modules import CBAM, ECA, SE, CoordAttn, SimAM
from .reference import CbamModule, CoordAttn as CoordAttnReference, EcaModule, SEModule, SimAM as SimAMReference

ATTENTIONS = {"se": (SEModule, SE), "eca": (EcaModule, ECA), "cbam": (CbamModule, CBAM),
              "coord": (CoordAttnReference, CoordAttn), "simam": (SimAMReference, SimAM)}


def make_attention(attn: str | None, channels: int, fused: bool) -> nn.Module | None:
    """The attention block for ``channels``: reference (timm layout) or fused, or None."""
    if attn is None:
        return None
    if attn not in ATTENTIONS:
        raise ValueError(f"attn must be one of {sorted(ATTENTIONS)} or None, got {attn!r}")
    return ATTENTIONS[attn][fused](channels)


class _Residual(nn.Module):
    """Shared tail of the two block kinds: relu(attn(out) + identity), fused when it can be."""

    def residual_tail(self, out, identity):
        if self.downsample is not None:
            identity = self.downsample(identity)
        if self.attn is None:
            return self.relu(out + identity)
        if self.fused_epilogue:
            return self.attn(out, shortcut=identity, act="relu")
        return self.relu(self.attn(out) + identity)

    @property
    def fused_epilogue(self) -> bool:
        """True when attn is a fused SE / ECA: the add and ReLU run inside its op."""
        return isinstance(self.attn, (SE, ECA))


class BasicBlock(_Residual):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, attn=None, fused=True):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attn = make_attention(attn, planes, fused)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.residual_tail(self.bn2(self.conv2(out)), x)


class Bottleneck(_Residual):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, attn=None, fused=True):
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.attn = make_attention(attn, planes * self.expansion, fused)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.residual_tail(self.bn3(self.conv3(out)), x)


class ResNet(nn.Module):
    """ResNet with ``attn`` ('se', 'eca', 'cbam' or None) in every block, fused by default."""

    def __init__(self, block, layers, attn=None, fused=True, num_classes=1000, width=64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        for i, n in enumerate(layers):
            setattr(self, f"layer{i + 1}", self._make_layer(block, width * 2**i, n, 1 if i == 0 else 2, attn, fused))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # torchvision's init
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes, blocks, stride, attn, fused):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, attn, fused)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, attn=attn, fused=fused) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(attn=None, fused=True, **kwargs) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], attn, fused, **kwargs)


def resnet34(attn=None, fused=True, **kwargs) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], attn, fused, **kwargs)


def resnet50(attn=None, fused=True, **kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], attn, fused, **kwargs)
