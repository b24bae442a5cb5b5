"""fusedattn.SimAM: drop-in for the SimAM authors' ``simam_module`` (no parameters)."""
import math

import torch
from torch import nn

from ..ops.dispatch import plain_eager
from ..ops.simam import check_e_lambda, simam_block, simam_math
from ..ops.unsupported import NotScriptable
from ..ops.validation import check_activation
from .conversion import is_sigmoid, require


class SimAM(NotScriptable, nn.Module):
    """Fused SimAM: y = x * sigmoid((x - mu)^2 / (4 (var + e_lambda)) + 0.5), mu and var (HW - 1
    in the denominator) over H * W per sample and channel. One kernel launch forward and one
    backward on CUDA. Arguments as the authors' ``simam_module(channels=None, e_lambda=1e-4)``
    (channels unused, as there: YOLO configs pass unscaled widths). H * W = 1 gives NaN, as the
    authors' module does (a 0 / 0 variance)."""

    def __init__(self, channels=None, e_lambda=1e-4):
        super().__init__()
        self.channels = channels
        self.e_lambda = check_e_lambda(e_lambda)

    def forward(self, x):
        check_activation(x)
        if x.dtype in (torch.float32, torch.float64) and plain_eager(x):
            return simam_math(x, self.e_lambda)[0]
        return simam_block(x, self.e_lambda)

    def extra_repr(self):
        return f"e_lambda={self.e_lambda}"

    @classmethod
    def from_module(cls, m: nn.Module) -> "SimAM":
        """A fused SimAM with m's e_lambda and mode. m is the authors' simam_module (or any module
        with a float ``e_lambda``, no parameters or buffers and a sigmoid as its only child)."""
        lam = getattr(m, "e_lambda", None)
        require(isinstance(lam, (int, float)) and not isinstance(lam, bool) and math.isfinite(lam) and lam >= 0,
                f"SimAM.from_module: {type(m).__name__} has no finite e_lambda >= 0")
        require(not any(True for _ in m.parameters()) and not any(True for _ in m.buffers()),
                f"SimAM.from_module: {type(m).__name__} has parameters or buffers (SimAM has none)")
        require(all(is_sigmoid(c) for c in m.children()),
                f"SimAM.from_module: {type(m).__name__}'s gate is not a sigmoid")
        return cls(e_lambda=lam).train(m.training)


simam_module = SimAM  # the authors' name
