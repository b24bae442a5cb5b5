"""Reference SimAM (Yang et al., ICML 2021) in plain PyTorch: a parameter-free attention from an
energy per position.

    n = H * W - 1,  mu = mean_hw x,  d = (x - mu)^2,  v = sum_hw d / n
    e = d / (4 (v + e_lambda)) + 0.5,  y = x * sigmoid(e)

The authors' module (``simam_module`` of their code) under a readable name; its attributes
(``e_lambda``, ``activaton`` as they spell it) so that convert() recognises either. With
H * W = 1, n = 0 and v = 0 / 0: the output is NaN, as the authors' module gives.
"""
from torch import nn


class SimAM(nn.Module):
    """SimAM: y = x * sigmoid((x - mu)^2 / (4 (var + e_lambda)) + 0.5) per (sample, channel);
    var over H * W with n - 1 in the denominator. ``channels`` is accepted and unused, as the
    authors' constructor does."""

    def __init__(self, channels=None, e_lambda=1e-4):
        super().__init__()
        self.activaton = nn.Sigmoid()
        self.e_lambda = e_lambda

    def forward(self, x):
        n = x.shape[2] * x.shape[3] - 1
        d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
        e = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + self.e_lambda)) + 0.5
        return x * self.activaton(e)

    def extra_repr(self):
        return f"e_lambda={self.e_lambda}"


simam_module = SimAM  # the authors' name
