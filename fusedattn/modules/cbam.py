"""fusedattn.CBAM: drop-in for timm's CbamModule and the common CBAM layouts; fusedattn.UltralyticsCBAM:
for Ultralytics' (YOLO) CBAM."""
import torch
from torch import nn

from ..ops.cbam import cbam_block, check_batch_statistics
from ..ops.cpu_math import cbam_module_math
from ..ops.dispatch import plain_eager
from ..ops.validation import check_activation, check_params_match
from ..ops.sync_batchnorm import cbam_synchronized, synchronizing
from ..ops.unsupported import NotScriptable
from ..reference.channels import make_divisible
from .conversion import KeyAliases, copy_into, is_relu, is_sigmoid, one_layer_fc, require, update_running_stats
from .layers import sublayer, weight_bias

# state_dict keys of the other layouts -> fusedattn.CBAM's (timm's) keys
_KEY_PREFIXES = [
    ("channelattention.fc.0.", "channel.fc1."), ("channelattention.fc.2.", "channel.fc2."),  # (a)
    ("spatialattention.conv1.", "spatial.conv.conv."),
    ("fc1.", "channel.fc1."), ("fc2.", "channel.fc2."), ("conv_after_concat.", "spatial.conv.conv."),  # (b)
    ("ChannelGate.mlp.1.", "channel.fc1."), ("ChannelGate.mlp.3.", "channel.fc2."),  # (c)
    ("SpatialGate.spatial.conv.", "spatial.conv.conv."), ("SpatialGate.spatial.bn.", "spatial.conv.bn."),
]


def _spatial_kernel_size(conv: nn.Conv2d, who: str) -> int:
    """k of a spatial-attention conv the fused gate computes: 2 -> 1 channels, k x k, padding k // 2,
    stride 1, no dilation."""
    k = conv.kernel_size[0]
    require(conv.kernel_size == (k, k) and conv.padding == (k // 2, k // 2) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.in_channels == 2 and conv.out_channels == 1,
            f"{who}: the spatial conv must be a 2->1 k x k conv with padding k // 2")
    return k


class _ChannelMLP(nn.Module):
    def __init__(self, channels, rd_channels, bias):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=bias)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=bias)


class _ConvNorm(nn.Module):
    def __init__(self, kernel_size, norm, bias, momentum, eps):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=bias)
        self.bn = nn.BatchNorm2d(1, eps=eps, momentum=momentum) if norm else None


class _Spatial(nn.Module):
    def __init__(self, *args):
        super().__init__()
        self.conv = _ConvNorm(*args)


class CBAM(NotScriptable, KeyAliases, nn.Module):
    """Fused CBAM: channel attention (shared MLP on avg- and max-pooled vectors), then spatial
    attention (k x k conv [+ BatchNorm] on per-pixel channel mean and max), in four passes
    over x forward and no x-sized intermediate saved for backward.

    timm CbamModule's arguments and state_dict (channel.fc1.weight, channel.fc2.weight,
    spatial.conv.conv.weight, spatial.conv.bn.*), plus the switches that select the other
    layouts: ``spatial_norm`` (BatchNorm after the conv), ``spatial_bias`` (conv bias),
    ``max_first`` (maps ordered [max, mean], the CBAM authors' code), ``bn_momentum``,
    ``bn_eps``. state_dicts of the tutorial layouts (channelattention.fc.*, spatialattention.conv1),
    the conv-with-bias layout (fc1, fc2, conv_after_concat) and the authors' layout
    (ChannelGate.mlp.*, SpatialGate.spatial.*) load directly; ``from_module`` picks the switches.
    """

    KEY_ALIASES = _KEY_PREFIXES
    #: synchronized mode (fusedattn.convert_sync_batchnorm): the spatial BatchNorm's batch statistics
    #: over every process of ``process_group`` (None: the default group) in train()
    sync_batchnorm = False
    process_group = None

    def __init__(self, channels, rd_ratio=1.0 / 16, rd_channels=None, rd_divisor=1,
                 spatial_kernel_size=7, act_layer=nn.ReLU, gate_layer="sigmoid", mlp_bias=False,
                 spatial_norm=True, spatial_bias=False, max_first=False, bn_momentum=0.1, bn_eps=1e-5):
        super().__init__()
        require(is_relu(act_layer), f"CBAM fuses act_layer=nn.ReLU only, got {act_layer!r}")
        require(is_sigmoid(gate_layer), f"CBAM fuses gate_layer='sigmoid' only, got {gate_layer!r}")
        require(spatial_kernel_size % 2 == 1, f"spatial_kernel_size must be odd, got {spatial_kernel_size}")
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.channels = channels
        self.max_first = max_first
        self.channel = _ChannelMLP(channels, rd_channels, mlp_bias)
        self.spatial = _Spatial(spatial_kernel_size, spatial_norm, spatial_bias, bn_momentum, bn_eps)

    def forward(self, x):
        check_activation(x, "x", self.channels)
        w1, b1 = weight_bias(sublayer(self, "channel.fc1"))
        w2, b2 = weight_bias(sublayer(self, "channel.fc2"))
        spatial = sublayer(self, "spatial.conv")
        conv, bn = sublayer(spatial, "conv"), sublayer(spatial, "bn")
        conv_weight, conv_bias = weight_bias(conv)
        check_params_match(x, fc1_weight=w1, conv_weight=conv_weight)
        if bn is not None and self.sync_batchnorm and self.training and synchronizing(self.process_group):
            y, mean, var, count = cbam_synchronized(x, w1, b1, w2, b2, conv_weight, conv_bias, bn.weight, bn.bias,
                                                    bn.eps, self.max_first, self.process_group)
            if bn.track_running_stats:
                update_running_stats(bn, mean, var, count)
            return y
        if x.dtype in (torch.float32, torch.float64) and plain_eager(x):
            return cbam_module_math(x, w1, b1, w2, b2, conv, bn, self.max_first)
        if bn is None:
            return cbam_block(x, w1, b1, w2, b2, conv_weight, conv_bias, None, None,
                              None, None, False, False, 0.0, self.max_first)[0]
        batch_stats = self.training or bn.running_mean is None
        check_batch_statistics(x, batch_stats)
        y, mean, var = cbam_block(x, w1, b1, w2, b2, conv_weight, conv_bias, bn.weight,
                                  bn.bias, bn.running_mean, bn.running_var, True, batch_stats, bn.eps, self.max_first)
        if self.training and bn.track_running_stats:
            update_running_stats(bn, mean, var, x.shape[0] * x.shape[2] * x.shape[3])
        return y

    def extra_repr(self):
        return (f"channels={self.channels}, rd_channels={self.channel.fc1.out_channels}, "
                f"kernel_size={self.spatial.conv.conv.kernel_size[0]}, max_first={self.max_first}")

    @classmethod
    def from_module(cls, m: nn.Module) -> "CBAM":
        """A fused CBAM with m's weights, buffers, device, dtype and mode. m is timm's
        CbamModule or one of the layouts in fusedattn.reference (recognised by structure)."""
        def conv2d(mod, *names):
            for n in names:
                mod = getattr(mod, n, None)
            return mod if isinstance(mod, nn.Conv2d) else None

        def bn_of(mod):
            return mod if isinstance(mod, nn.BatchNorm2d) else None

        if conv2d(m, "channel", "fc1") and conv2d(m, "spatial", "conv", "conv"):          # timm
            fc1, conv = m.channel.fc1, m.spatial.conv.conv
            bn, max_first = bn_of(getattr(m.spatial.conv, "bn", None)), False
            require(is_relu(getattr(m.channel, "act", "relu")), "CBAM.from_module: act is not ReLU")
            for part in (m.channel, m.spatial):
                gate = getattr(part, "gate", "sigmoid")
                require(is_sigmoid(gate), f"CBAM.from_module: gate {gate!r} is not sigmoid")
        elif conv2d(m, "spatialattention", "conv1"):                                        # (a)
            fc = m.channelattention.fc
            require(is_relu(fc[1]), "CBAM.from_module: channel MLP activation is not ReLU")
            fc1, conv, bn, max_first = fc[0], m.spatialattention.conv1, None, False
        elif conv2d(m, "fc1") and conv2d(m, "conv_after_concat"):                          # (b)
            fc1, conv, bn, max_first = m.fc1, m.conv_after_concat, None, False
        elif hasattr(m, "ChannelGate") and hasattr(m, "SpatialGate"):                      # (c)
            lin = m.ChannelGate.mlp[1]
            require(isinstance(lin, nn.Linear), "CBAM.from_module: ChannelGate.mlp.1 is not Linear")
            fc1 = nn.Conv2d(lin.in_features, lin.out_features, 1, bias=lin.bias is not None)
            conv, bn, max_first = m.SpatialGate.spatial.conv, bn_of(getattr(m.SpatialGate.spatial, "bn", None)), True
        else:
            raise ValueError(f"CBAM.from_module: {type(m).__name__} matches no known CBAM layout")
        k = _spatial_kernel_size(conv, "CBAM.from_module")
        new = cls(fc1.in_channels, rd_channels=fc1.out_channels, spatial_kernel_size=k,
                  mlp_bias=fc1.bias is not None, spatial_norm=bn is not None, spatial_bias=conv.bias is not None,
                  max_first=max_first, bn_momentum=bn.momentum if bn is not None else 0.1,
                  bn_eps=bn.eps if bn is not None else 1e-5)
        if bn is not None:
            require(bn.affine, "CBAM.from_module: BatchNorm without affine parameters is not supported")
        return copy_into(new, m)


class _ChannelGate(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)


class _SpatialConv(nn.Module):
    def __init__(self, kernel_size):
        super().__init__()
        self.cv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)


class UltralyticsCBAM(NotScriptable, nn.Module):
    """Fused Ultralytics ``CBAM`` (YOLO): ChannelAttention, x1 = x * sigmoid(fc(mean_hw x)) with one
    C -> C 1x1 conv with bias (no max pool, no second layer), then SpatialAttention, y = x1 *
    sigmoid(cv1([mean_c x1, max_c x1])) with a 2 -> 1 k x k conv without bias or norm (k 3 or 7).
    CBAM's fused pipeline with the one-layer channel gate. Same arguments (c1, kernel_size) and
    state_dict (channel_attention.fc.weight / .bias, spatial_attention.cv1.weight)."""

    def __init__(self, c1, kernel_size=7):
        super().__init__()
        require(kernel_size in (3, 7), f"kernel size must be 3 or 7, got {kernel_size}")
        self.channels = c1
        self.channel_attention = _ChannelGate(c1)
        self.spatial_attention = _SpatialConv(kernel_size)

    def forward(self, x):
        check_activation(x, "x", self.channels)
        w, b = weight_bias(sublayer(self, "channel_attention.fc"))
        conv = sublayer(self, "spatial_attention.cv1")
        conv_weight = weight_bias(conv)[0]
        check_params_match(x, fc_weight=w, cv1_weight=conv_weight)
        if x.dtype in (torch.float32, torch.float64) and plain_eager(x):
            return cbam_module_math(x, w, b, None, None, conv, None, False)
        return cbam_block(x, w, b, None, None, conv_weight, None, None, None, None, None,
                          False, False, 0.0, False)[0]

    def extra_repr(self):
        return f"c1={self.channels}, kernel_size={self.spatial_attention.cv1.kernel_size[0]}"

    @classmethod
    def from_module(cls, m: nn.Module) -> "UltralyticsCBAM":
        """A fused copy of Ultralytics' CBAM m (recognised by structure: channel_attention.fc,
        spatial_attention.cv1), with its weights, device, dtype and mode."""
        who = "UltralyticsCBAM.from_module"
        ca, sa = m.channel_attention, m.spatial_attention
        fc, conv = one_layer_fc(ca, who), getattr(sa, "cv1", None)
        pool = getattr(ca, "pool", None)
        require(isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1)),
                f"{who}: channel_attention.pool is not AdaptiveAvgPool2d(1)")
        for part, name in ((ca, "channel_attention"), (sa, "spatial_attention")):
            require(is_sigmoid(getattr(part, "act", None)), f"{who}: {name}.act is not sigmoid")
        require(isinstance(conv, nn.Conv2d), f"{who}: spatial_attention.cv1 is not a Conv2d")
        k = _spatial_kernel_size(conv, who)
        require(k in (3, 7) and conv.bias is None, f"{who}: spatial_attention.cv1 must have k 3 or 7 and no bias")
        return copy_into(cls(fc.in_channels, kernel_size=k), m)
