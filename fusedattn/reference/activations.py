"""timm's own activation module for the gates: ``create_act_layer('sigmoid')`` builds this class,
not ``nn.Sigmoid``, so the reference blocks hold it too and convert() is tested against it."""
from torch import nn


class Sigmoid(nn.Module):
    """x -> sigmoid(x) (in place with ``inplace=True``), as timm.layers.activations.Sigmoid."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return x.sigmoid_() if self.inplace else x.sigmoid()


#: the activations by name (timm's and PyTorch's spellings), as the reference blocks build them
NAMED = {
    "identity": nn.Identity, "relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU, "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "hardswish": nn.Hardswish, "hard_swish": nn.Hardswish, "sigmoid": Sigmoid,
    "hard_sigmoid": nn.Hardsigmoid, "hardsigmoid": nn.Hardsigmoid,
}


def make_activation(spec) -> nn.Module:
    """An activation module from a name, a module class or a module (kept as it is)."""
    if isinstance(spec, str):
        return NAMED[spec.lower()]()
    return spec() if isinstance(spec, type) else spec
