"""fusedattn.SE: drop-in for timm's SEModule (same arguments, same state_dict)."""
from torch import nn

from ..ops.se import se, se_block
from ..ops.validation import check_activation, check_params_match
from ..ops.unsupported import NotScriptable
from ..reference.channels import make_divisible
from .conversion import KeyAliases, copy_into, is_relu, is_sigmoid, require

class SE(NotScriptable, KeyAliases, nn.Module):
    """Fused Squeeze-and-Excitation: y = x * sigmoid(fc2(relu(fc1(mean_hw(x))))).

    Arguments and state_dict as timm's ``SEModule`` (fc1.weight [rd, C, 1, 1], fc1.bias [rd],
    fc2.weight [C, rd, 1, 1], fc2.bias [C]). state_dicts of the Linear layout
    (fc.0.weight [rd, C], fc.2.weight [C, rd]) load too. Only ReLU, no norm and the sigmoid
    gate are fused; other choices raise ValueError.
    """

    KEY_ALIASES = [("fc.0.", "fc1."), ("fc.2.", "fc2.")]  # the Linear layout

    def __init__(self, channels, rd_ratio=1.0 / 16, rd_channels=None, rd_divisor=8,
                 add_maxpool=False, bias=True, act_layer=nn.ReLU, norm_layer=None,
                 gate_layer="sigmoid"):
        super().__init__()
        require(is_relu(act_layer), f"SE fuses act_layer=nn.ReLU only, got {act_layer!r}")
        require(norm_layer is None, f"SE fuses norm_layer=None only, got {norm_layer!r}")
        require(is_sigmoid(gate_layer), f"SE fuses gate_layer='sigmoid' only, got {gate_layer!r}")
        self.channels = channels
        self.add_maxpool = add_maxpool
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=bias)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=bias)

    def forward(self, x, shortcut=None, act=None):
        """SE(x), or with a residual epilogue act(SE(x) + shortcut) in the same fused pass
        (act None, 'relu' or 'silu'): what a ResNet block does right after its attention."""
        check_activation(x, "x", self.channels)
        fc1, fc2 = self.fc1, self.fc2
        if shortcut is not None or act is not None:
            return se(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, self.add_maxpool, shortcut=shortcut, act=act)
        check_params_match(x, fc1_weight=fc1.weight, fc2_weight=fc2.weight)
        return se_block(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, self.add_maxpool, None, 0)

    def extra_repr(self):
        return f"channels={self.channels}, rd_channels={self.fc1.out_channels}, add_maxpool={self.add_maxpool}"

    @classmethod
    def from_module(cls, m: nn.Module) -> "SE":
        """A fused SE with m's weights, device, dtype and train/eval mode. m is timm's
        SEModule (fc1/fc2 1x1 convs) or the Linear layout (fc = Linear, ReLU, Linear, Sigmoid)."""
        fc1, fc2 = getattr(m, "fc1", None), getattr(m, "fc2", None)
        if isinstance(fc1, nn.Conv2d) and isinstance(fc2, nn.Conv2d):
            act, bn, gate = getattr(m, "act", "relu"), getattr(m, "bn", None), getattr(m, "gate", None)
            require(is_relu(act), f"SE.from_module: activation {act!r} is not ReLU")
            require(bn is None or isinstance(bn, nn.Identity), f"SE.from_module: norm {bn!r} is not fused")
            require(gate is None or is_sigmoid(gate), f"SE.from_module: gate {gate!r} is not sigmoid")
            require(fc1.kernel_size == (1, 1) and fc2.kernel_size == (1, 1) and fc1.groups == 1,
                    "SE.from_module: fc1/fc2 must be ungrouped 1x1 convs")
            new = cls(fc1.in_channels, rd_channels=fc1.out_channels, bias=fc1.bias is not None,
                      add_maxpool=bool(getattr(m, "add_maxpool", False)))
        else:
            fc = getattr(m, "fc", None)
            layers = list(fc) if isinstance(fc, nn.Sequential) else []
            require(len(layers) == 4 and isinstance(layers[0], nn.Linear) and isinstance(layers[2], nn.Linear),
                    f"SE.from_module: {type(m).__name__} is neither timm's SEModule layout "
                    "(fc1, fc2 convs) nor fc = Sequential(Linear, ReLU, Linear, Sigmoid)")
            require(is_relu(layers[1]), f"SE.from_module: activation {layers[1]!r} is not ReLU")
            require(is_sigmoid(layers[3]), f"SE.from_module: gate {layers[3]!r} is not sigmoid")
            require((layers[0].bias is None) == (layers[2].bias is None),
                    "SE.from_module: both Linear layers must have a bias, or neither")
            new = cls(layers[0].in_features, rd_channels=layers[0].out_features,
                      bias=layers[0].bias is not None)
        return copy_into(new, m)
