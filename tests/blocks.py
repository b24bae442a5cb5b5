"""The blocks the cross-cutting tests run (non-finite values, empty batches, pickling, memory):
each a reference module (the spec) and, through ``fused_copy``, its fused module."""
import copy

import torch.nn.functional as F
from torch import nn

import fusedattn
from fusedattn.reference import (CbamModule, CecaModule, ChannelAttention, EcaModule, EffectiveSEModule, PSAModule,
                                 SelectiveKernel, SEModule, SqueezeExcite)


class ResidualTail(nn.Module):
    """relu(attn(x) + x / 2): the bundled ResNets' block tail (reference side: unfused)."""

    def __init__(self, attn):
        super().__init__()
        self.attn = attn

    def forward(self, x):
        if isinstance(self.attn, (fusedattn.SE, fusedattn.ECA)):
            return self.attn(x, shortcut=x / 2, act="relu")
        return F.relu(self.attn(x) + x / 2)


def fused_copy(ref):
    """The fused module for reference block ``ref`` (a copy: ref stays as it was)."""
    ref = copy.deepcopy(ref)
    if isinstance(ref, ResidualTail):
        return ResidualTail(fused_copy(ref.attn))
    kind = {SEModule: fusedattn.SE, SqueezeExcite: fusedattn.SqueezeExcite, EffectiveSEModule: fusedattn.EffectiveSE,
            ChannelAttention: fusedattn.ChannelAttention, EcaModule: fusedattn.ECA, CecaModule: fusedattn.ECA,
            CbamModule: fusedattn.CBAM, SelectiveKernel: fusedattn.SelectiveKernel, PSAModule: fusedattn.PSA}
    return kind[type(ref)].from_module(ref)


C = 16
BLOCKS = {
    "se": lambda: SEModule(C, rd_channels=4),
    "se-maxpool": lambda: SEModule(C, rd_channels=4, add_maxpool=True),
    "se-silu-hardsigmoid": lambda: SEModule(C, rd_channels=4, act_layer="silu", gate_layer="hard_sigmoid"),
    "squeeze-excite-gelu-tanh": lambda: SqueezeExcite(C, rd_channels=4, act_layer="gelu_tanh"),
    "ese-maxpool": lambda: EffectiveSEModule(C, add_maxpool=True),
    "channel-attention": lambda: ChannelAttention(C),
    "se-residual": lambda: ResidualTail(SEModule(C, rd_channels=4)),
    "eca": lambda: EcaModule(C),
    "eca-residual": lambda: ResidualTail(EcaModule(C)),
    "ceca": lambda: CecaModule(C),
    "cbam-train": lambda: CbamModule(C, rd_channels=4).train(),
    "cbam-eval": lambda: CbamModule(C, rd_channels=4).eval(),
    "sk-train": lambda: SelectiveKernel(C, C, rd_channels=8).train(),
    "sk-eval": lambda: SelectiveKernel(C, C, rd_channels=8).eval(),
    "psa": lambda: PSAModule(C, 64),
}
