"""The pipeline every channel-gate block shares (SE, ECA), with the optional residual epilogue
out = act(x * gate + shortcut) of ResNet-style blocks (kernels/epilogue.py).

Forward, per chunk of samples:      pool(x) -> gate(pooled) -> y = x * gate
                                    (SE's small gate: at the end of the pool launch, kernels/se_pool_gate.py)
Backward, per chunk of samples:     pool(dy * x) -> gate backward -> dx = dy * gate + ...
then the block's weight gradients once over the whole batch.

Order of work (why chunks): x is read twice, once to pool and once to scale. Inside a CUDA
graph capture the samples are processed in chunks of about half the L2 (config.l2_chunks):
the pool pass pulls a chunk of x into L2 and the scale pass, launched right after on the
same chunk, finds it there. So HBM sees x once and y once, not x twice. The same holds
for dy in the backward pass. Only the [B, C] vectors leave the chunk. An eager call takes the
whole batch as one chunk: every chunk repeats its launches, and a launch's host time (20-50 us
measured) is worth more than the HBM read a chunk saves (about 8 us per 25 MB on an H100).

ECA / CECA, and SE when the call is small, run the same passes in one launch instead
(kernels/one_launch.py); ``config.one_launch = False`` forces this pipeline.

The block supplies ``launch_gate(parts, b0, nb)``, which turns the pooling partials of
samples [b0, b0 + nb) into its [B, C] gate (forward) or coefficients (backward).
"""
from typing import Callable, Iterator, NamedTuple

import torch

from . import config
from .channel_pool import PoolPartials, PoolPlan, channel_pool, new_partials, plan_pool
from .channel_scale import channel_scale, channel_scale_backward
from .epilogue import epilogue_grad
from .layout import ChannelView, channel_view

GateLauncher = Callable[[PoolPartials, int, int], None]


def sample_chunks(x: torch.Tensor) -> Iterator[tuple[int, int]]:
    """(b0, nb) chunks of samples whose slices of x fit the chunk budget (config.device_chunk_bytes:
    half the L2 in a CUDA graph capture, the whole batch in an eager call)."""
    B, C, H, W = x.shape
    per_sample = max(C * H * W * x.element_size(), 1)
    chunk = max(1, min(B, config.device_chunk_bytes(x.device) // per_sample))
    for b0 in range(0, B, chunk):
        yield b0, min(chunk, B - b0)


def chunk_size(x: torch.Tensor) -> int:
    return max((nb for _, nb in sample_chunks(x)), default=1)


class Epilogue(NamedTuple):
    """The residual epilogue  out = act(x * gate + shortcut)  (kernels/epilogue.py)."""
    act: int = 0                             # activation-table code (kernels/activations.py)
    shortcut: torch.Tensor | None = None     # [B, C, H, W] added before the activation
    out: torch.Tensor | None = None          # the forward's output (backward, ReLU)

    @property
    def active(self) -> bool:
        """Backward work to do: dz = dy * act'(.) (without an activation dz is dy itself)."""
        return self.act != 0


#: pool_with_gate(x view, plan, partials, b0, nb): pools a chunk and computes its gate in one launch
PoolGateLauncher = Callable[[ChannelView, PoolPlan, PoolPartials, int, int], None]


def channel_gate_forward(x: torch.Tensor, gate: torch.Tensor, launch_gate: GateLauncher | None,
                         with_max: bool = False, epilogue: Epilogue = Epilogue(),
                         pool_with_gate: PoolGateLauncher | None = None) -> torch.Tensor:
    """y = act(x * gate[b, c] (+ shortcut)) with gate [B, C] computed chunk by chunk by
    ``launch_gate`` after the pool pass, or by the pool pass itself (``pool_with_gate``)."""
    B, C, H, W = x.shape
    xv = channel_view(x)
    y = config.new_like(xv.tensor)
    yv = channel_view(y)
    rv = channel_view(epilogue.shortcut) if epilogue.shortcut is not None else None
    plan = plan_pool(xv, chunk_size(x), C, H * W)
    parts = new_partials(plan, B, C, x, with_max)
    for b0, nb in sample_chunks(x):
        if pool_with_gate is not None:
            pool_with_gate(xv, plan, parts, b0, nb)
        else:
            channel_pool(xv, plan, parts, b0, nb)
            launch_gate(parts, b0, nb)
        channel_scale(xv, yv, gate, plan, b0, nb, shortcut=rv, act=epilogue.act)
    return y


#: pool_with_gate_backward(x view, dy view, plan, partials, b0, nb): pools sum_hw(dy * x) of a chunk
#: (and ties) and computes its gate backward in one launch
PoolGateBackwardLauncher = Callable[[ChannelView, ChannelView, PoolPlan, PoolPartials, int, int], None]


def channel_gate_backward(dy: torch.Tensor, x: torch.Tensor, gate: torch.Tensor,
                          launch_gate_backward: GateLauncher | None, mean_coef: torch.Tensor,
                          pool_max: torch.Tensor | None = None,
                          max_coef: torch.Tensor | None = None,
                          epilogue: Epilogue = Epilogue(),
                          pool_with_gate: PoolGateBackwardLauncher | None = None,
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dx, dz) of y = act(x * gate + shortcut), where ``launch_gate_backward`` (after the pool
    pass, or ``pool_with_gate`` in it) turns sum_hw(dz * x) partials (and ties with ``pool_max``)
    into ``mean_coef`` (and ``max_coef``) rows. dz = dy * act'(.) is the shortcut's gradient
    (None without an activation: dz = dy); per chunk it is written, then read back from L2 by the
    two passes after it."""
    B, C, H, W = x.shape
    xv, dyv = channel_view(x), channel_view(dy)
    dx = config.new_like(xv.tensor)
    dxv = channel_view(dx)
    dz = dzv = None
    if epilogue.active:
        dz = config.new_like(xv.tensor)
        dzv = channel_view(dz)
        outv = channel_view(epilogue.out) if epilogue.out is not None else None
        rv = channel_view(epilogue.shortcut) if epilogue.shortcut is not None else None
    plan = plan_pool(xv, chunk_size(x), C, H * W)
    parts = new_partials(plan, B, C, x, with_max=False, with_counts=pool_max is not None)
    for b0, nb in sample_chunks(x):
        if dz is not None:
            epilogue_grad(dyv, outv, xv, rv, dzv, gate, epilogue.act, plan, b0, nb)
        g = dzv if dz is not None else dyv
        if pool_with_gate is not None:
            pool_with_gate(xv, g, plan, parts, b0, nb)
        else:
            channel_pool(xv, plan, parts, b0, nb, dy=g, ref_max=pool_max)
            launch_gate_backward(parts, b0, nb)
        channel_scale_backward(g, xv, dxv, gate, mean_coef, plan, b0, nb, pool_max, max_coef)
    return dx, dz
