"""The fused SE family: one fused block (pool -> fc -> act -> fc -> gate -> rescale) in the layouts
people's models hold, each with its constructor and state_dict keys:

    SE                  timm SEModule (fc1, fc2) and the Linear layout (fc.0, fc.2)
    SqueezeExcite       timm SqueezeExcite of the EfficientNet / MobileNet blocks (conv_reduce, conv_expand)
    SqueezeExcitation   torchvision.ops.SqueezeExcitation (fc1, fc2)
    EffectiveSE         timm EffectiveSEModule (VoVNet's eSE: one C -> C layer, fc)
    ChannelAttention    Ultralytics' ChannelAttention (YOLO: one C -> C layer, fc)

The hidden activation is any function of the activation table (kernels/activations.py), the gate
sigmoid or hard sigmoid; both are recognised by what they compute (conversion.activation_code_of).
"""
from torch import nn

from ..kernels.activations import ACTIVATIONS, RELU, SIGMOID
from ..ops.activations import activation_name
from ..ops.se import se, se_block
from ..ops.validation import check_activation, check_params_match
from ..ops.unsupported import NotScriptable
from ..reference.channels import make_divisible
from .conversion import KeyAliases, activation_arg, copy_into, one_layer_fc, require
from .layers import sublayer, weight_bias


class SE(NotScriptable, KeyAliases, nn.Module):
    """Fused Squeeze-and-Excitation: y = x * gate(fc2(act(fc1(mean_hw(x))))).

    Arguments and state_dict as timm's ``SEModule`` (fc1.weight [rd, C, 1, 1], fc1.bias [rd],
    fc2.weight [C, rd, 1, 1], fc2.bias [C]). state_dicts of the Linear layout
    (fc.0.weight [rd, C], fc.2.weight [C, rd]) load too. act_layer: any function of the activation
    table; gate_layer: sigmoid or hard sigmoid; norm_layer must be None (else ValueError).
    """

    KEY_ALIASES = [("fc.0.", "fc1."), ("fc.2.", "fc2.")]  # the Linear layout
    #: the attribute names of the two 1x1 convs in this layout
    LAYERS = ("fc1", "fc2")

    def __init__(self, channels, rd_ratio=1.0 / 16, rd_channels=None, rd_divisor=8,
                 add_maxpool=False, bias=True, act_layer=nn.ReLU, norm_layer=None,
                 gate_layer="sigmoid", device=None, dtype=None):
        super().__init__()
        require(norm_layer is None, f"SE fuses norm_layer=None only, got {norm_layer!r}")
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self._build(channels, rd_channels, bias, add_maxpool, activation_arg(act_layer, "act_layer"),
                    activation_arg(gate_layer, "gate_layer", gate=True), device, dtype)

    def _build(self, channels, rd_channels, bias, add_maxpool, mlp_act, gate_fn, device, dtype):
        """The 1x1 convs under this layout's names (one C -> C conv for a one-layer layout), and the
        block's options."""
        self.channels, self.add_maxpool = channels, add_maxpool
        self.mlp_act, self.gate_fn = mlp_act, gate_fn
        reduce, expand = self.LAYERS
        if expand is None:
            setattr(self, reduce, nn.Conv2d(channels, channels, 1, bias=bias, device=device, dtype=dtype))
            return
        setattr(self, reduce, nn.Conv2d(channels, rd_channels, 1, bias=bias, device=device, dtype=dtype))
        setattr(self, expand, nn.Conv2d(rd_channels, channels, 1, bias=bias, device=device, dtype=dtype))

    def forward(self, x, shortcut=None, act=None):
        """SE(x), or with a residual epilogue act(SE(x) + shortcut) in the same fused pass
        (act None, 'relu' or 'silu'): what a ResNet block does right after its attention."""
        check_activation(x, "x", self.channels)
        reduce, expand = self.LAYERS
        w1, b1 = weight_bias(sublayer(self, reduce))
        w2, b2 = (None, None) if expand is None else weight_bias(sublayer(self, expand))
        if shortcut is not None or act is not None:
            return se(x, w1, b1, w2, b2, self.add_maxpool, shortcut=shortcut, act=act,
                      mlp_act=self.mlp_act, gate=self.gate_fn)
        check_params_match(x, fc1_weight=w1, fc2_weight=w2)
        return se_block(x, w1, b1, w2, b2, self.add_maxpool, None, 0, self.mlp_act, self.gate_fn)

    def extra_repr(self):
        fc1 = getattr(self, self.LAYERS[0])
        s = f"channels={self.channels}, rd_channels={fc1.out_channels}, add_maxpool={self.add_maxpool}"
        if self.LAYERS[1] is None:
            return f"channels={self.channels}, add_maxpool={self.add_maxpool}, gate={activation_name(self.gate_fn)}"
        if (self.mlp_act, self.gate_fn) != (RELU, SIGMOID):
            s += f", act={activation_name(self.mlp_act)}, gate={activation_name(self.gate_fn)}"
        return s

    @classmethod
    def from_module(cls, m: nn.Module) -> "SE":
        """A fused block with m's weights, device, dtype and train/eval mode. Called on SE: m is timm's
        SEModule (fc1/fc2 1x1 convs, act, gate) or the Linear layout (fc = Linear, act, Linear, gate);
        on SqueezeExcite / SqueezeExcitation: that layout."""
        if cls is not SE:
            return copy_into(cls._from_layout(m), m)
        fc1, fc2 = getattr(m, "fc1", None), getattr(m, "fc2", None)
        if isinstance(fc1, nn.Conv2d) and isinstance(fc2, nn.Conv2d):
            bn = getattr(m, "bn", None)
            require(bn is None or isinstance(bn, nn.Identity), f"SE.from_module: norm {bn!r} is not fused")
            _check_convs(fc1, fc2, "SE.from_module")
            new = cls(fc1.in_channels, rd_channels=fc1.out_channels, bias=fc1.bias is not None,
                      add_maxpool=bool(getattr(m, "add_maxpool", False)),
                      act_layer=getattr(m, "act", "relu"), gate_layer=getattr(m, "gate", "sigmoid"))
        else:
            fc = getattr(m, "fc", None)
            layers = list(fc) if isinstance(fc, nn.Sequential) else []
            require(len(layers) == 4 and isinstance(layers[0], nn.Linear) and isinstance(layers[2], nn.Linear),
                    f"SE.from_module: {type(m).__name__} is neither timm's SEModule layout "
                    "(fc1, fc2 convs) nor fc = Sequential(Linear, act, Linear, gate)")
            require((layers[0].bias is None) == (layers[2].bias is None),
                    "SE.from_module: both Linear layers must have a bias, or neither")
            new = cls(layers[0].in_features, rd_channels=layers[0].out_features,
                      bias=layers[0].bias is not None, act_layer=layers[1], gate_layer=layers[3])
        return copy_into(new, m)


def _check_convs(reduce: nn.Conv2d, expand: nn.Conv2d, who: str) -> None:
    require(reduce.kernel_size == (1, 1) and expand.kernel_size == (1, 1) and reduce.groups == 1
            and expand.groups == 1, f"{who}: the two convs must be ungrouped 1x1 convs")
    require((reduce.bias is None) == (expand.bias is None), f"{who}: both convs must have a bias, or neither")


def _biased_convs(m: nn.Module, names: tuple[str, str], who: str) -> tuple[nn.Conv2d, nn.Conv2d]:
    """m's two 1x1 convs under ``names`` (reduce, expand), checked, both with a bias (the layouts
    that always have one)."""
    reduce, expand = getattr(m, names[0], None), getattr(m, names[1], None)
    require(isinstance(reduce, nn.Conv2d) and isinstance(expand, nn.Conv2d),
            f"{who}: {type(m).__name__} has no {names[0]} / {names[1]} 1x1 convs")
    _check_convs(reduce, expand, who)
    require(reduce.bias is not None, f"{who}: {names[0]} / {names[1]} without bias")
    return reduce, expand


def _arg(fn, arg: str, who: str, gate: bool = False) -> int:
    """activation_arg with ``who`` (the class doing from_module) in the message."""
    try:
        return activation_arg(fn, arg, gate)
    except ValueError as e:
        raise ValueError(f"{who}: {e}") from None


class SqueezeExcite(SE):
    """Fused timm ``SqueezeExcite`` (EfficientNet, MobileNetV3, MixNet, ... blocks): same arguments and
    state_dict (conv_reduce.weight [rd, C, 1, 1], conv_reduce.bias, conv_expand.weight [C, rd, 1, 1],
    conv_expand.bias); rd = rd_round_fn(in_chs * rd_ratio) (round by default) unless rd_channels is
    given; force_act_layer replaces act_layer."""

    LAYERS = ("conv_reduce", "conv_expand")
    KEY_ALIASES = []

    def __init__(self, in_chs, rd_ratio=0.25, rd_channels=None, act_layer=nn.ReLU, gate_layer=nn.Sigmoid,
                 force_act_layer=None, rd_round_fn=None, device=None, dtype=None):
        nn.Module.__init__(self)
        if rd_channels is None:
            rd_channels = (rd_round_fn or round)(in_chs * rd_ratio)
        act = activation_arg(force_act_layer or act_layer, "force_act_layer" if force_act_layer else "act_layer")
        self._build(in_chs, rd_channels, True, False, act, activation_arg(gate_layer, "gate_layer", gate=True),
                    device, dtype)

    @classmethod
    def _from_layout(cls, m: nn.Module) -> "SqueezeExcite":
        who = "SqueezeExcite.from_module"
        reduce, _ = _biased_convs(m, cls.LAYERS, who)
        return cls(reduce.in_channels, rd_channels=reduce.out_channels,
                   act_layer=_arg(getattr(m, "act1", None), "act1", who),
                   gate_layer=_arg(getattr(m, "gate", None), "gate", who, gate=True))


class SqueezeExcitation(SE):
    """Fused ``torchvision.ops.SqueezeExcitation`` (torchvision's EfficientNet, MobileNetV3, RegNet):
    same arguments (activation, scale_activation: module classes) and state_dict (fc1, fc2)."""

    KEY_ALIASES = []

    def __init__(self, input_channels, squeeze_channels, activation=nn.ReLU, scale_activation=nn.Sigmoid):
        nn.Module.__init__(self)
        self._build(input_channels, squeeze_channels, True, False, activation_arg(activation, "activation"),
                    activation_arg(scale_activation, "scale_activation", gate=True), None, None)

    @classmethod
    def _from_layout(cls, m: nn.Module) -> "SqueezeExcitation":
        who = "SqueezeExcitation.from_module"
        fc1, _ = _biased_convs(m, cls.LAYERS, who)
        act = _arg(getattr(m, "activation", None), "activation", who)
        gate = _arg(getattr(m, "scale_activation", None), "scale_activation", who, gate=True)
        return cls(fc1.in_channels, fc1.out_channels, activation=act, scale_activation=gate)


class EffectiveSE(SE):
    """Fused timm ``EffectiveSEModule`` (eSE of VoVNet / CenterMask): y = x * gate(fc(pool(x))), one C -> C
    1x1 conv with bias, gate_layer hard sigmoid by default (or sigmoid), pool 0.5 * (mean + max) with
    add_maxpool. Same arguments and state_dict (fc.weight [C, C, 1, 1], fc.bias [C])."""

    LAYERS = ("fc", None)
    KEY_ALIASES = []

    def __init__(self, channels, add_maxpool=False, gate_layer="hard_sigmoid", device=None, dtype=None, **_):
        nn.Module.__init__(self)
        self._build(channels, None, True, add_maxpool, ACTIVATIONS["identity"],
                    activation_arg(gate_layer, "gate_layer", gate=True), device, dtype)

    @classmethod
    def _from_layout(cls, m: nn.Module) -> "EffectiveSE":
        who = "EffectiveSE.from_module"
        fc = one_layer_fc(m, who)
        return cls(fc.in_channels, add_maxpool=bool(getattr(m, "add_maxpool", False)),
                   gate_layer=_arg(getattr(m, "gate", None), "gate", who, gate=True))


class ChannelAttention(SE):
    """Fused Ultralytics ``ChannelAttention`` (YOLO's CBAM channel half, also used alone):
    y = x * act(fc(mean_hw(x))), one C -> C 1x1 conv with bias, sigmoid. Same arguments and state_dict
    (fc.weight [C, C, 1, 1], fc.bias [C])."""

    LAYERS = ("fc", None)
    KEY_ALIASES = []

    def __init__(self, channels):
        nn.Module.__init__(self)
        self._build(channels, None, True, False, ACTIVATIONS["identity"], SIGMOID, None, None)

    @classmethod
    def _from_layout(cls, m: nn.Module) -> "ChannelAttention":
        who = "ChannelAttention.from_module"
        new = cls(one_layer_fc(m, who).in_channels)
        new.gate_fn = _arg(getattr(m, "act", None), "act", who, gate=True)
        return new
