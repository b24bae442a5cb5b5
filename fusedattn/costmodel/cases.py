"""The cost model's cases: every block at the ResNet-50 stage shapes, batch 64 and 1, bfloat16 and
float32, NCHW and channels_last, forward and forward+backward; and how one is run.

SK and PSA are modelled by their attention tails (bench's sk_tail / psa_tail: the branch convs
stay cuDNN); SE and ECA also with the residual epilogue (se_residual / eca_residual). The SE
family of the mobile networks at their own shapes (224x224 input): timm EfficientNet-B0's
SqueezeExcite (SiLU / sigmoid, rd from the block's input), MobileNetV3-Large's (ReLU / hard
sigmoid) and VoVNet's EffectiveSEModule (one C -> C layer, hard sigmoid); Ultralytics' (YOLO) CBAM
at the ResNet-50 stage shapes. Coordinate Attention (timm's CoordAttn: bn1 with batch statistics at
B = 64, running ones at B = 1) and SimAM at the ResNet-50 stage shapes; CoordAttn's gate on the
[B, C, H + W] strip vectors is PyTorch (its launches are not Triton's: not in this model's counts).
"""
import copy
from typing import NamedTuple

import torch
from torch import nn

from ..benchmark import BLOCKS as BENCH_BLOCKS, Block, make_input
from ..modules import ECA, EffectiveSE, SqueezeExcite, UltralyticsCBAM
from ..reference import CecaModule, EffectiveSEModule, SqueezeExcite as TimmSqueezeExcite
from ..reference import UltralyticsCBAM as YoloCBAM
from ..reference.channels import make_divisible

BLOCKS: dict[str, Block] = {
    "se": BENCH_BLOCKS["se"],
    "eca": BENCH_BLOCKS["eca"],
    "ceca": Block(lambda c: CecaModule(c), ECA.from_module),
    "cbam": BENCH_BLOCKS["cbam"],
    "ultralytics_cbam": Block(lambda c: YoloCBAM(c, 7), UltralyticsCBAM.from_module),
    "sk_tail": BENCH_BLOCKS["sk_tail"],
    "psa_tail": BENCH_BLOCKS["psa_tail"],
    "se_residual": BENCH_BLOCKS["se_residual"],
    "eca_residual": BENCH_BLOCKS["eca_residual"],
    "efficientnet_se": Block(lambda c: TimmSqueezeExcite(c, rd_channels=EFFICIENTNET_RD[c], act_layer=nn.SiLU),
                             SqueezeExcite.from_module),
    "mobilenetv3_se": Block(lambda c: TimmSqueezeExcite(c, rd_channels=make_divisible(c / 4, 8), act_layer=nn.ReLU,
                                                        gate_layer=nn.Hardsigmoid), SqueezeExcite.from_module),
    "ese": Block(lambda c: EffectiveSEModule(c), EffectiveSE.from_module),
    "coord": BENCH_BLOCKS["coord"],
    "simam": BENCH_BLOCKS["simam"],
}

STAGES = ((256, 56), (512, 28), (1024, 14), (2048, 7))
#: (C, H = W) of a block's own cases where they are not STAGES (the networks' SE inputs at 224x224)
BLOCK_STAGES = {
    "efficientnet_se": ((32, 112), (144, 56), (240, 28), (672, 14), (1152, 7)),
    "mobilenetv3_se": ((72, 28), (120, 28), (672, 14), (960, 7)),
    "ese": ((256, 56), (512, 28), (768, 14), (1024, 7)),
}
#: EfficientNet-B0's SE reduction width per expanded width C (in_chs * 0.25 of the block's input)
EFFICIENTNET_RD = {32: 8, 96: 4, 144: 6, 240: 10, 480: 20, 672: 28, 1152: 48}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
LAYOUTS = ("nchw", "channels_last")
PASSES = ("fwd", "fwd+bwd")


class Case(NamedTuple):
    block: str
    B: int
    C: int
    H: int
    W: int
    dtype: str      # key of DTYPES
    layout: str
    pass_: str

    @property
    def shape(self):
        return (self.B, self.C, self.H, self.W)

    @property
    def key(self) -> str:
        return f"{self.block} {self.B}x{self.C}x{self.H}x{self.W} {self.dtype} {self.layout} {self.pass_}"

    @property
    def training(self) -> bool:
        """Batch-1 cases run in eval() (BatchNorm inside SK and CBAM needs more than one value)."""
        return self.B > 1


def all_cases(blocks=tuple(BLOCKS), batches=(64, 1), dtypes=tuple(DTYPES), layouts=LAYOUTS,
              passes=PASSES, stages=STAGES) -> list[Case]:
    """Every combination; a block of BLOCK_STAGES at its own shapes when ``stages`` is the default."""
    return [Case(b, B, c, s, s, dt, lay, p) for b in blocks for B in batches
            for c, s in (BLOCK_STAGES.get(b, stages) if stages is STAGES else stages)
            for dt in dtypes for lay in layouts for p in passes]


def make_pair(case: Case, device="cpu", seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(eager reference, fused block with its weights), in the case's dtype and train/eval mode."""
    torch.manual_seed(seed)
    spec = BLOCKS[case.block]
    ref = spec.make_ref(case.C).to(device=device, dtype=DTYPES[case.dtype]).train(case.training)
    return ref, spec.to_fused(copy.deepcopy(ref))


def make_inputs(case: Case, shape=None, device="cpu", requires_grad=None) -> list[torch.Tensor]:
    """Random inputs of the case's block for ``shape`` (default: the case's)."""
    shape = tuple(shape or case.shape)
    grad = case.pass_ != "fwd" if requires_grad is None else requires_grad
    return [make_input(s, DTYPES[case.dtype], case.layout, device, grad)
            for s in BLOCKS[case.block].input_shapes(shape)]


def runner(module: nn.Module, xs: list[torch.Tensor], pass_: str):
    """A function doing one call of the case: module(*xs), and for fwd+bwd its backward to the
    inputs and parameters (torch.autograd.grad: no accumulation into .grad, which is no part of
    the block)."""
    if pass_ == "fwd":
        def run():
            with torch.no_grad():
                return module(*xs)
        return run
    with torch.no_grad():
        dy = torch.randn_like(module(*xs))

    wrt = [t for t in (*xs, *module.parameters()) if t.requires_grad]

    def run_backward():
        return torch.autograd.grad(module(*xs), wrt, dy, allow_unused=True)
    return run_backward
