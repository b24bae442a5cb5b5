"""The residual epilogue of the channel-gate ops (SE, ECA):  out = act(x * gate + shortcut).

Plain-PyTorch math for the CPU path, and the argument check shared by the ops. The Triton
side is kernels/epilogue.py (fused into the scale pass; its gradient pass before the pool).
"""
from torch import Tensor

from ..kernels.activations import ACTIVATIONS
from .activations import activation, activation_grad
from .validation import check_param

RELU, SILU = ACTIVATIONS["relu"], ACTIVATIONS["silu"]
#: the epilogue activations offered (the kernels take any activation-table code)
EPILOGUE_ACTS = {"none": 0, "relu": RELU, "silu": SILU}


def act_code(act) -> int:
    """Activation-table code of ``act``: None / 'none', 'relu', 'silu' (or nn.ReLU / nn.SiLU)."""
    name = "none" if act is None else getattr(act, "__name__", act)
    name = {"ReLU": "relu", "SiLU": "silu", "Identity": "none"}.get(name, name)
    if name not in EPILOGUE_ACTS:
        raise ValueError(f"act must be one of None, 'relu', 'silu', got {act!r}")
    return EPILOGUE_ACTS[name]


def check_shortcut(x: Tensor, shortcut: Tensor | None) -> None:
    if shortcut is None:
        return
    if isinstance(shortcut, Tensor) and shortcut.dtype != x.dtype:  # an activation: x's dtype, autocast or not
        raise TypeError(f"shortcut must have x's dtype {x.dtype}, got {shortcut.dtype}")
    check_param(shortcut, "shortcut", x, tuple(x.shape))


def epilogue_torch(z: Tensor, shortcut: Tensor | None, act: int) -> Tensor:
    """act(z + shortcut) in z's dtype."""
    if shortcut is not None:
        z = z + shortcut.to(z.dtype)
    return activation(z, act)


def epilogue_grad_torch(dy: Tensor, out: Tensor | None, x: Tensor, gate: Tensor, shortcut: Tensor | None,
                        act: int) -> Tensor:
    """dz = dy * act'(x * gate + shortcut), in gate's dtype."""
    dt = gate.dtype
    d = dy.to(dt)
    if act == RELU:
        return activation_grad(d, out.to(dt), act)
    if act:
        z = x.to(dt) * gate[:, :, None, None]
        if shortcut is not None:
            z = z + shortcut.to(dt)
        return activation_grad(d, z, act)
    return d


def epilogue_saved(y: Tensor, shortcut: Tensor | None, act: int) -> list[Tensor | None]:
    """What an op's backward keeps for the epilogue: the output for ReLU, the shortcut for the
    other activations (None in place of one not needed: save_for_backward takes None, and no
    placeholder tensor is allocated per call)."""
    return [y if act == RELU else None, shortcut if act not in (0, RELU) else None]


def shortcut_grad(ctx, dy: Tensor, dz: Tensor | None) -> Tensor | None:
    """The shortcut's gradient: dz (= dy * act'(.)), or dy itself without an activation (an op
    without a shortcut: the registration drops it, ops/registration.py)."""
    return dz if ctx.act else dy
