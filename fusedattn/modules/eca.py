"""fusedattn.ECA / fusedattn.CECA: drop-ins for timm's EcaModule / CecaModule."""
from torch import nn

from ..ops.eca import eca, eca_block
from ..ops.validation import check_activation, check_params_match
from ..ops.unsupported import NotScriptable
from ..reference.channels import eca_kernel_size
from .conversion import copy_into, is_sigmoid, require
from .layers import sublayer, weight_bias


class ECA(NotScriptable, nn.Module):
    """Fused Efficient Channel Attention: y = x * sigmoid(conv1d_k(mean_hw(x))) across channels,
    zero padded. Arguments and state_dict (conv.weight [1, 1, k]) as timm's ``EcaModule``;
    the MLP variant (use_mlp=True) and gates other than sigmoid raise ValueError."""

    circular = False

    def __init__(self, channels=None, kernel_size=3, gamma=2, beta=1, act_layer=None,
                 gate_layer="sigmoid", rd_ratio=1 / 8, rd_channels=None, rd_divisor=8,
                 use_mlp=False):
        super().__init__()
        require(not use_mlp, "ECA fuses the conv variant only (use_mlp=False)")
        require(is_sigmoid(gate_layer), f"ECA fuses gate_layer='sigmoid' only, got {gate_layer!r}")
        self._build(channels, kernel_size, gamma, beta, bias=False)

    def _build(self, channels, kernel_size, gamma, beta, bias):
        if channels is not None:
            kernel_size = eca_kernel_size(channels, gamma, beta)
        require(kernel_size % 2 == 1, f"kernel_size must be odd, got {kernel_size}")
        self.channels = channels
        self.padding = (kernel_size - 1) // 2
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size,
                              padding=0 if self.circular else self.padding, bias=bias)

    def forward(self, x, shortcut=None, act=None):
        """ECA(x), or with a residual epilogue act(ECA(x) + shortcut) in the same fused pass."""
        check_activation(x, "x", self.channels)
        weight, bias = weight_bias(sublayer(self, "conv"))
        if shortcut is not None or act is not None:
            return eca(x, weight, bias, circular=self.circular, shortcut=shortcut, act=act)
        check_params_match(x, weight=weight)
        return eca_block(x, weight, bias, self.circular, None, 0)

    def extra_repr(self):
        return f"channels={self.channels}, kernel_size={self.conv.kernel_size[0]}, circular={self.circular}"

    @classmethod
    def from_module(cls, m: nn.Module) -> "ECA":
        """A fused ECA (zero padding) or CECA (circular) with m's weights, device, dtype and
        mode. m is timm's EcaModule / CecaModule or any module with the same ``conv``."""
        conv = getattr(m, "conv", None)
        require(isinstance(conv, nn.Conv1d) and conv.in_channels == 1 and conv.out_channels == 1,
                f"ECA.from_module: {type(m).__name__} has no Conv1d(1, 1, k) named conv")
        require(getattr(m, "conv2", None) is None, "ECA.from_module: the MLP variant is not fused")
        gate = getattr(m, "gate", None)
        require(gate is None or is_sigmoid(gate), f"ECA.from_module: gate {gate!r} is not sigmoid")
        k = conv.kernel_size[0]
        pad = (k - 1) // 2
        require(conv.stride == (1,) and conv.dilation == (1,), "ECA.from_module: conv must be dense")
        if conv.padding == (0,) and getattr(m, "padding", 0) == pad and pad > 0:
            new = CECA(kernel_size=k, act_layer=nn.ReLU if conv.bias is not None else None)
        else:
            require(conv.padding == (pad,) and conv.padding_mode == "zeros" and conv.bias is None,
                    "ECA.from_module: expected a bias-free conv with padding (k - 1) // 2")
            new = ECA(kernel_size=k)
        return copy_into(new, m)


class CECA(ECA):
    """Fused ECA with circular padding of the pooled vector (timm's ``CecaModule``);
    state_dict conv.weight [1, 1, k] (+ conv.bias [1] when act_layer is given, timm's rule)."""

    circular = True

    def __init__(self, channels=None, kernel_size=3, gamma=2, beta=1, act_layer=None,
                 gate_layer="sigmoid"):
        nn.Module.__init__(self)
        require(is_sigmoid(gate_layer), f"CECA fuses gate_layer='sigmoid' only, got {gate_layer!r}")
        self._build(channels, kernel_size, gamma, beta, bias=act_layer is not None)
