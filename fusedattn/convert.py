"""fusedattn.convert: swap every attention block fusedattn recognises in a model for its fused
module, with the block's weights, buffers, train/eval mode, device and dtype.

Blocks are recognised by structure (the submodules and their kinds), not by class name:

    SK     paths (ModuleList) + attn.fc_reduce / attn.bn / attn.fc_select     timm SelectiveKernel
    PSA    conv_1..conv_4 + se.fc1 / se.fc2                                   EPSANet PSAModule
    CBAM   channel.fc1 + spatial.conv.conv (timm); channelattention + spatialattention;
           fc1 + conv_after_concat; ChannelGate + SpatialGate (the CBAM authors')
           channel_attention.fc + spatial_attention.cv1                       Ultralytics CBAM
    ECA    conv = Conv1d(1, 1, k)                                             timm EcaModule / CecaModule
    SE     fc1 / fc2 1x1 convs + act (timm SEModule); fc = Sequential(Linear, act, Linear, gate);
           conv_reduce / conv_expand + act1 + gate (timm SqueezeExcite of EfficientNet / MobileNet);
           fc1 / fc2 + activation + scale_activation (torchvision.ops.SqueezeExcitation);
           one C -> C 1x1 conv fc + gate (timm EffectiveSEModule); fc + act + pool = AdaptiveAvgPool2d(1)
           (Ultralytics ChannelAttention)
    Coord  conv1 + conv_h + conv_w 1x1 convs (+ bn1)                         timm CoordAttn, the authors' CoordAtt
    SimAM  a float e_lambda, no parameters, a sigmoid child                   the SimAM authors' simam_module

A recognised block the fused module cannot express (another activation, a norm layer, an MLP
variant, ...) is left in place and reported with the reason; nothing inside a recognised block
is converted on its own. In the bundled models (fusedattn.models), a converted SE / ECA also
takes over its block's add and ReLU (the fused residual epilogue).
"""
import copy
from dataclasses import dataclass, field

from torch import nn

from .modules import (CBAM, ECA, CoordAttn, PSA, SE, ChannelAttention, EffectiveSE, SelectiveKernel, SimAM,
                      SqueezeExcitation, SqueezeExcite, UltralyticsCBAM)


def _has(m: nn.Module, path: str, kind=nn.Module) -> bool:
    for name in path.split("."):
        m = getattr(m, name, None)
    return isinstance(m, kind)


def _is_sk(m):
    return isinstance(getattr(m, "paths", None), nn.ModuleList) and _has(m, "attn.fc_reduce", nn.Conv2d) \
        and _has(m, "attn.fc_select", nn.Conv2d)


def _is_psa(m):
    return all(_has(m, f"conv_{i}", nn.Conv2d) for i in range(1, 5)) and _has(m, "se.fc1", nn.Conv2d)


def _is_cbam(m):
    return (_has(m, "channel.fc1", nn.Conv2d) and _has(m, "spatial.conv.conv", nn.Conv2d)) \
        or (_has(m, "channelattention") and _has(m, "spatialattention")) \
        or (_has(m, "fc1", nn.Conv2d) and _has(m, "conv_after_concat", nn.Conv2d)) \
        or (_has(m, "ChannelGate") and _has(m, "SpatialGate"))


def _is_ultralytics_cbam(m):
    return _has(m, "channel_attention.fc", nn.Conv2d) and _has(m, "spatial_attention.cv1", nn.Conv2d)


def _is_eca(m):
    conv = getattr(m, "conv", None)
    return isinstance(conv, nn.Conv1d) and conv.in_channels == 1 and conv.out_channels == 1


def _is_squeeze_excite(m):
    return _has(m, "conv_reduce", nn.Conv2d) and _has(m, "conv_expand", nn.Conv2d) and hasattr(m, "gate")


def _is_squeeze_excitation(m):
    return _has(m, "fc1", nn.Conv2d) and _has(m, "fc2", nn.Conv2d) and hasattr(m, "scale_activation")


def _one_layer_fc(m):
    fc = getattr(m, "fc", None)
    return isinstance(fc, nn.Conv2d) and fc.kernel_size == (1, 1) and fc.in_channels == fc.out_channels


def _is_effective_se(m):
    return _one_layer_fc(m) and hasattr(m, "gate")


def _is_channel_attention(m):
    pool = getattr(m, "pool", None)
    return _one_layer_fc(m) and hasattr(m, "act") and isinstance(pool, nn.AdaptiveAvgPool2d) \
        and pool.output_size in (1, (1, 1))


def _is_se(m):
    fc1, fc2 = getattr(m, "fc1", None), getattr(m, "fc2", None)
    if isinstance(fc1, nn.Conv2d) and isinstance(fc2, nn.Conv2d):
        # timm's SEModule has ``act``; EPSANet's SEWeightModule (returns the gate, not x * gate) has not
        return hasattr(m, "act") and fc1.kernel_size == (1, 1) and fc2.in_channels == fc1.out_channels
    fc = getattr(m, "fc", None)
    layers = list(fc) if isinstance(fc, nn.Sequential) else []
    return len(layers) == 4 and isinstance(layers[0], nn.Linear) and isinstance(layers[2], nn.Linear)


def _is_coord_attn(m):
    return all(_has(m, n, nn.Conv2d) for n in ("conv1", "conv_h", "conv_w"))


def _is_simam(m):
    return isinstance(getattr(m, "e_lambda", None), (int, float)) and not any(True for _ in m.parameters())


#: (block kind, structural test, fused class), tried in this order (outer layouts first)
KINDS = [("SK", _is_sk, SelectiveKernel), ("PSA", _is_psa, PSA), ("CBAM", _is_cbam, CBAM),
         ("CBAM", _is_ultralytics_cbam, UltralyticsCBAM),
         ("CoordAttn", _is_coord_attn, CoordAttn),
         ("ECA", _is_eca, ECA), ("SE", _is_squeeze_excite, SqueezeExcite),
         ("SE", _is_squeeze_excitation, SqueezeExcitation), ("SE", _is_effective_se, EffectiveSE),
         ("SE", _is_channel_attention, ChannelAttention), ("SE", _is_se, SE), ("SimAM", _is_simam, SimAM)]
FUSED = tuple(cls for _, _, cls in KINDS)  # CECA is an ECA


@dataclass
class ConversionReport:
    replaced: list = field(default_factory=list)   # (module path, original class, fused class)
    left: list = field(default_factory=list)       # (module path, original class, why it was left)
    epilogues: list = field(default_factory=list)  # bundled blocks whose add + ReLU now run fused

    def __str__(self):
        lines = [f"fusedattn.convert: {len(self.replaced)} replaced, {len(self.left)} left in place"]
        lines += [f"  replaced {p or '<model>'}: {a} -> {b}" for p, a, b in self.replaced]
        lines += [f"  left     {p or '<model>'}: {a} ({why})" for p, a, why in self.left]
        lines += [f"  fused residual epilogue in {p}" for p in self.epilogues]
        return "\n".join(lines)


def _fused_from(m: nn.Module, report: ConversionReport, path: str) -> nn.Module | None:
    for kind, matches, cls in KINDS:
        if matches(m):
            try:
                new = cls.from_module(m)
            except ValueError as e:
                report.left.append((path, type(m).__name__, f"{kind}-like, not fused: {e}"))
                return m
            report.replaced.append((path, type(m).__name__, type(new).__name__))
            return new
    return None


def _walk(m: nn.Module, report: ConversionReport, path: str) -> nn.Module:
    if isinstance(m, FUSED):  # already fused
        return m
    new = _fused_from(m, report, path)
    if new is not None:
        return new
    for name, child in list(m.named_children()):
        converted = _walk(child, report, f"{path}.{name}" if path else name)
        if converted is not child:
            setattr(m, name, converted)
    if getattr(m, "fused_epilogue", False) and hasattr(m, "residual_tail"):
        report.epilogues.append(path)
    return m


def convert(model: nn.Module, inplace: bool = False, sync_batchnorm: bool = False,
            process_group=None) -> tuple[nn.Module, ConversionReport]:
    """(model with every recognised attention block fused, report). The model's state_dict keys,
    outputs (within dtype tolerance), device, dtype and train/eval mode stay as they were.
    ``inplace=False`` converts a deep copy and leaves ``model`` untouched. ``sync_batchnorm``:
    the fused blocks with a BatchNorm inside synchronize it over ``process_group``, as
    ``convert_sync_batchnorm`` does."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    report = ConversionReport()
    model = _walk(model, report, "")
    if sync_batchnorm:
        convert_sync_batchnorm(model, process_group)
    return model, report


def convert_sync_batchnorm(model: nn.Module, process_group=None) -> nn.Module:
    """Switch every fused block with a BatchNorm inside (CBAM with its spatial BatchNorm,
    SelectiveKernel) to the synchronized mode: in train(), while torch.distributed runs more than
    one process in ``process_group`` (None: the default group), the BatchNorm normalises with the
    statistics of all processes' batches and all-reduces their gradients, like
    torch.nn.SyncBatchNorm, on CPU (gloo) and GPU alike; that mode runs the block in plain
    PyTorch, not fused. The network's own nn.BatchNorm2d layers are left to
    torch.nn.SyncBatchNorm.convert_sync_batchnorm. Changes ``model`` in place and returns it."""
    for m in model.modules():
        if isinstance(m, (CBAM, SelectiveKernel)):
            m.sync_batchnorm, m.process_group = True, process_group
    return model
