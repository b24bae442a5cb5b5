"""The table of blocks the shared tests run: each row a reference module (the spec) and, through
``fused_copy``, its fused module."""
import copy
from dataclasses import dataclass
from typing import Callable

import torch.nn.functional as F
from torch import nn

import fusedattn
from fusedattn.reference import (CbamModule, CecaModule, ChannelAttention, CoordAtt, CoordAttn, EcaModule, EffectiveSEModule, PSAModule,
                                 SelectiveKernel, SEModule, SimAM, SqueezeExcite, UltralyticsCBAM)


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
            CbamModule: fusedattn.CBAM, UltralyticsCBAM: fusedattn.UltralyticsCBAM, SelectiveKernel: fusedattn.SelectiveKernel, PSAModule: fusedattn.PSA,
            SimAM: fusedattn.SimAM, CoordAttn: fusedattn.CoordAttn, CoordAtt: fusedattn.CoordAttn}
    return kind[type(ref)].from_module(ref)


C = 16


@dataclass(frozen=True)
class Row:
    """One block of the table: ``make(C)`` builds its reference module (the spec) for C channels,
    in the mode the row tests; the fused module is ``fused_copy`` of it. ``row()`` / ``row(C)``
    call make (C = 16 by default)."""
    make: Callable[[int], nn.Module]
    any_channels: bool = False   # the block takes any C (ECA: its weight has no channel axis)
    unfused: bool = False        # branch convs (+ BatchNorm) that PyTorch runs in x's dtype (SK, PSA)
    residual: bool = False       # the residual tail around a block (the bundled ResNets' fused epilogue)
    batchnorm_train: bool = False   # a BatchNorm with batch statistics: B * H * W > 1 needed

    def __call__(self, channels: int = C) -> nn.Module:
        return self.make(channels)


def _psa(c):
    """PSA with EPSANet's conv groups where the channels allow (4 splits of C, groups up to 16)."""
    return PSAModule(c, 64, conv_groups=(1, 4, 8, 16) if c % 16 == 0 else (1, 1, 1, 1))


#: The table: every block layout fusedattn fuses, at the options that change its kernels or math.
#: The shared tests run every row (tests/test_block_table.py: reference per dtype and layout,
#: gradcheck, torch.compile, state_dict, determinism; test_errors.py: bad input; test_properties.py:
#: any shape and strided view; test_nonfinite, test_empty_batch, test_memory, test_transforms,
#: test_distributed). A new block is a row here plus its own kernel code and layout tests.
BLOCKS = {
    "se": Row(lambda c: SEModule(c, rd_channels=max(c // 4, 1))),
    "se-maxpool": Row(lambda c: SEModule(c, rd_channels=max(c // 4, 1), add_maxpool=True)),
    "se-silu-hardsigmoid": Row(lambda c: SEModule(c, rd_channels=max(c // 4, 1), act_layer="silu",
                                                  gate_layer="hard_sigmoid")),
    "squeeze-excite-gelu-tanh": Row(lambda c: SqueezeExcite(c, rd_channels=max(c // 4, 1), act_layer="gelu_tanh")),
    "ese-maxpool": Row(lambda c: EffectiveSEModule(c, add_maxpool=True)),
    "channel-attention": Row(lambda c: ChannelAttention(c)),
    "se-residual": Row(lambda c: ResidualTail(SEModule(c, rd_channels=max(c // 4, 1))), residual=True),
    "eca": Row(lambda c: EcaModule(c), any_channels=True),
    "eca-residual": Row(lambda c: ResidualTail(EcaModule(c)), any_channels=True, residual=True),
    "ceca": Row(lambda c: CecaModule(c), any_channels=True),
    "cbam-train": Row(lambda c: CbamModule(c, rd_channels=max(c // 4, 1)).train(), batchnorm_train=True),
    "cbam-eval": Row(lambda c: CbamModule(c, rd_channels=max(c // 4, 1)).eval()),
    "ultralytics-cbam": Row(lambda c: UltralyticsCBAM(c, 3)),
    "sk-train": Row(lambda c: SelectiveKernel(c, c, rd_channels=max(c // 2, 1), split_input=c % 2 == 0).train(),
                    unfused=True, batchnorm_train=True),
    "sk-eval": Row(lambda c: SelectiveKernel(c, c, rd_channels=max(c // 2, 1), split_input=c % 2 == 0).eval(),
                   unfused=True),
    "psa": Row(_psa, unfused=True),
    "simam": Row(lambda c: SimAM(c), any_channels=True),
    "coord-train": Row(lambda c: CoordAttn(c, rd_channels=max(c // 4, 1)).train(), batchnorm_train=True),
    "coord-eval-skip-hardsigmoid": Row(lambda c: CoordAttn(c, rd_channels=max(c // 4, 1), bias=True, act_layer="silu",
                                                           gate_layer="hard_sigmoid", has_skip=True).eval()),
    "coord-authors": Row(lambda c: CoordAtt(c, c, reduction=4).train(), batchnorm_train=True),
}
