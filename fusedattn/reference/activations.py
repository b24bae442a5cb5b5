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
