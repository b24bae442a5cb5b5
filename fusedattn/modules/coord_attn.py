"""fusedattn.CoordAttn: drop-in for timm's CoordAttn; fusedattn.CoordAtt: for the authors' CoordAtt."""
import torch
from torch import nn

from ..ops.coord_attn import coord_attn_block
from ..ops.cpu_math import coord_attn_module_math
from ..ops.dispatch import plain_eager
from ..ops.unsupported import NotScriptable
from ..ops.validation import check_activation, check_params_match
from ..reference.channels import make_divisible
from .conversion import activation_arg, copy_into, require, update_running_stats


class CoordAttn(NotScriptable, nn.Module):
    """Fused Coordinate Attention: strip means of x over W and over H in one pass, the gate on
    those [B, C, H + W] vectors (conv1, bn1, act, conv_h / conv_w, gate), then one pass y = x *
    a_h[b, c, h] * a_w[b, c, w] (+ x with has_skip). Backward: one pass over dy and x, the gate's
    backward, one pass writing dx. No x-sized tensor saved but x.

    timm CoordAttn's arguments and state_dict (conv1.weight [.bias], bn1.*, conv_h.weight [.bias],
    conv_w.weight [.bias]); act_layer any activation of the table (Hardswish by default), gate_layer
    sigmoid or hard sigmoid, norm_layer nn.BatchNorm2d (any subclass or factory building one) or
    None. bn1 in train() normalises with the batch's statistics over B x (H + W) positions and
    updates its running statistics as nn.BatchNorm2d does."""

    def __init__(self, channels, rd_ratio=1.0 / 16, rd_channels=None, rd_divisor=8, se_factor=2 / 3, bias=False,
                 act_layer=nn.Hardswish, norm_layer=nn.BatchNorm2d, gate_layer="sigmoid", has_skip=False):
        super().__init__()
        self.act_code = activation_arg(act_layer, "act_layer")
        self.gate_code = activation_arg(gate_layer, "gate_layer", gate=True)
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio * se_factor, rd_divisor, round_limit=0.0)
        self.channels, self.has_skip = channels, bool(has_skip)
        self.conv1 = nn.Conv2d(channels, rd_channels, 1, bias=bias)
        bn = norm_layer(rd_channels) if norm_layer is not None else nn.Identity()
        require(isinstance(bn, (nn.BatchNorm2d, nn.Identity)),
                f"CoordAttn fuses norm_layer nn.BatchNorm2d or None, got {type(bn).__name__}")
        self.bn1 = bn
        self.conv_h = nn.Conv2d(rd_channels, channels, 1, bias=bias)
        self.conv_w = nn.Conv2d(rd_channels, channels, 1, bias=bias)

    def forward(self, x):
        check_activation(x, "x", self.channels)
        conv1, conv_h, conv_w = self.conv1, self.conv_h, self.conv_w
        bn = None if isinstance(self.bn1, nn.Identity) else self.bn1
        check_params_match(x, conv1_weight=conv1.weight)
        if (x.dtype in (torch.float32, torch.float64) and plain_eager(x)) or not isinstance(bn, (nn.BatchNorm2d, type(None))):
            # lean CPU math; or bn1 swapped for another norm (torch.nn.SyncBatchNorm.convert_sync_batchnorm):
            # the block in plain PyTorch with bn1 run as the module it is
            return coord_attn_module_math(x, conv1, bn, conv_h, conv_w, self.act_code, self.gate_code, self.has_skip)
        batch_stats = bn is not None and (self.training or bn.running_mean is None)
        norm = (bn.weight, bn.bias, bn.running_mean, bn.running_var) if bn is not None else (None,) * 4
        y, mean, var = coord_attn_block(
            x, conv1.weight, conv1.bias, *norm, bn is not None, batch_stats, bn.eps if bn is not None else 0.0,
            conv_h.weight, conv_h.bias, conv_w.weight, conv_w.bias, self.act_code, self.gate_code, self.has_skip)
        if bn is not None and self.training and bn.track_running_stats:
            update_running_stats(bn, mean, var, x.shape[0] * (x.shape[2] + x.shape[3]))
        return y

    def extra_repr(self):
        return f"channels={self.channels}, rd_channels={self.conv1.out_channels}, has_skip={self.has_skip}"

    @classmethod
    def from_module(cls, m: nn.Module) -> "CoordAttn":
        """A fused copy (weights, buffers, device, dtype, mode) of timm's CoordAttn or the authors'
        CoordAtt (recognised by structure: conv1, bn1, act, conv_h, conv_w; a gate module, or
        sigmoid gates as the authors')."""
        conv1, conv_h, conv_w = (getattr(m, n, None) for n in ("conv1", "conv_h", "conv_w"))
        require(all(isinstance(c, nn.Conv2d) and c.kernel_size == (1, 1) and c.groups == 1 and c.stride == (1, 1)
                    for c in (conv1, conv_h, conv_w)),
                f"CoordAttn.from_module: {type(m).__name__} has no 1x1 convs conv1, conv_h, conv_w")
        C, rd = conv1.in_channels, conv1.out_channels
        require(conv_h.in_channels == conv_w.in_channels == rd and conv_h.out_channels == conv_w.out_channels == C,
                f"CoordAttn.from_module: conv_h / conv_w must map {rd} -> {C} channels (oup == inp)")
        bias = conv1.bias is not None
        require(all((c.bias is not None) == bias for c in (conv_h, conv_w)),
                "CoordAttn.from_module: conv1, conv_h and conv_w must all have a bias or none")
        bn = getattr(m, "bn1", None)
        require(bn is None or isinstance(bn, (nn.BatchNorm2d, nn.Identity)),
                f"CoordAttn.from_module: bn1 is {type(bn).__name__}, not BatchNorm2d or Identity")
        norm = isinstance(bn, nn.BatchNorm2d)
        if norm:
            require(bn.affine, "CoordAttn.from_module: bn1 without affine parameters is not supported")
        gate = getattr(m, "gate", "sigmoid")   # the authors' gates: .sigmoid()
        new = cls(C, rd_channels=rd, bias=bias, act_layer=getattr(m, "act", None),
                  norm_layer=(lambda n: nn.BatchNorm2d(n, eps=bn.eps, momentum=bn.momentum,
                                                       track_running_stats=bn.track_running_stats)) if norm else None,
                  gate_layer=gate, has_skip=getattr(m, "has_skip", False))
        return copy_into(new, m)


class CoordAtt(CoordAttn):
    """Fused CoordAtt of the authors' code: CoordAtt(inp, oup, reduction=32), mip = max(8, inp //
    reduction), convs with bias, bn1, h_swish, sigmoid gates; oup must equal inp. Same state_dict
    (conv1, bn1, conv_h, conv_w)."""

    def __init__(self, inp, oup, reduction=32):
        require(oup == inp, f"CoordAtt: oup ({oup}) must equal inp ({inp}): y = x * a_h * a_w")
        super().__init__(inp, rd_channels=max(8, inp // reduction), bias=True, act_layer=nn.Hardswish)



