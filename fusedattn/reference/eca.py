"""Reference ECA blocks in plain PyTorch: the spec the fused ECA is tested against."""
import torch.nn.functional as F
from torch import nn

from .activations import Sigmoid
from .channels import eca_kernel_size


class EcaModule(nn.Module):
    """timm's EcaModule: y = x * sigmoid(Conv1d(1, 1, k, padding=(k-1)//2)(mean_hw(x))).

    With ``channels`` given, k is ECA's adaptive size (gamma, beta), else ``kernel_size``.
    state_dict: conv.weight [1, 1, k].
    """

    def __init__(self, channels=None, kernel_size=3, gamma=2, beta=1):
        super().__init__()
        if channels is not None:
            kernel_size = eca_kernel_size(channels, gamma, beta)
        assert kernel_size % 2 == 1
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.gate = Sigmoid()

    def forward(self, x):
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        y = self.gate(self.conv(y)).view(x.shape[0], -1, 1, 1)
        return x * y


class CecaModule(nn.Module):
    """timm's CecaModule: ECA with circular padding of the pooled vector, conv padding 0.
    The conv has a bias when act_layer is given (timm's rule). state_dict: conv.weight
    [1, 1, k] (+ conv.bias [1])."""

    def __init__(self, channels=None, kernel_size=3, gamma=2, beta=1, act_layer=None):
        super().__init__()
        if channels is not None:
            kernel_size = eca_kernel_size(channels, gamma, beta)
        assert kernel_size % 2 == 1
        self.padding = (kernel_size - 1) // 2
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=0, bias=act_layer is not None)
        self.gate = Sigmoid()

    def forward(self, x):
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        y = F.pad(y, (self.padding, self.padding), mode="circular")
        y = self.gate(self.conv(y)).view(x.shape[0], -1, 1, 1)
        return x * y
