"""The activation table's PyTorch mirror (codes: kernels/activations.py): the plain-PyTorch path
calls PyTorch's own functions and their ATen backward, so it matches the eager modules exactly.

``code_arg`` takes a code or a name (the functional API) and refuses anything else naming the
argument; the modules pass ``fusedattn.modules.conversion.activation_code_of`` to it, which
recognises a module class, a module or a function by what it computes.
"""
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels.activations import ACTIVATIONS, GATES, HARD_SIGMOID_SLOPE, LEAKY_SLOPE

aten = torch.ops.aten

#: code -> f(z)
FORWARD: dict[int, Callable[[Tensor], Tensor]] = {
    0: lambda z: z,
    1: torch.relu,
    2: F.silu,
    3: F.relu6,
    4: lambda z: F.leaky_relu(z, LEAKY_SLOPE),
    5: F.gelu,
    6: lambda z: F.gelu(z, approximate="tanh"),
    7: F.hardswish,
    8: torch.sigmoid,
    9: F.hardsigmoid,
}

#: code -> (grad, z) -> grad * f'(z), PyTorch's backward formulas
BACKWARD: dict[int, Callable[[Tensor, Tensor], Tensor]] = {
    0: lambda g, z: g,
    1: lambda g, z: aten.threshold_backward(g, z, 0),
    2: aten.silu_backward,
    3: lambda g, z: aten.hardtanh_backward(g, z, 0.0, 6.0),
    4: lambda g, z: aten.leaky_relu_backward(g, z, LEAKY_SLOPE, False),
    5: lambda g, z: aten.gelu_backward(g, z),
    6: lambda g, z: aten.gelu_backward(g, z, approximate="tanh"),
    7: aten.hardswish_backward,
    8: lambda g, z: aten.sigmoid_backward(g, torch.sigmoid(z)),
    9: aten.hardsigmoid_backward,
}

#: spellings of the table's names (timm's layer names included)
ALIASES = {"none": "identity", "swish": "silu", "hard_swish": "hardswish", "hardsigmoid": "hard_sigmoid",
           "gelu_erf": "gelu", "leakyrelu": "leaky_relu"}


def activation(z: Tensor, code: int) -> Tensor:
    """f(z) for the table's function ``code``."""
    return FORWARD[code](z)


def activation_grad(grad: Tensor, z: Tensor, code: int) -> Tensor:
    """grad * f'(z) from the input z."""
    return BACKWARD[code](grad, z)


def gate_grad(grad: Tensor, g: Tensor, code: int) -> Tensor:
    """grad * f'(z) from the gate's output g = f(z) (sigmoid or hard_sigmoid), as the kernels do."""
    if code == ACTIVATIONS["hard_sigmoid"]:   # a select, as PyTorch's: a NaN grad where the gate is flat gives 0
        return torch.where((g > 0) & (g < 1), grad * HARD_SIGMOID_SLOPE, 0.0)
    return aten.sigmoid_backward(grad, g)


def activation_name(code: int) -> str:
    return next(name for name, c in ACTIVATIONS.items() if c == code)


def code_of_name(name: str) -> int | None:
    """The table's code for a function name ('relu', 'swish', 'hard_sigmoid', ...), or None."""
    name = name.lower()
    return ACTIVATIONS.get(ALIASES.get(name, name))


def is_gate(code: int) -> bool:
    return code in GATES


def code_arg(fn, arg: str, gate: bool = False, recognise: Callable | None = None) -> int:
    """The code of ``fn`` for the argument ``arg``: a table code, a name, or (with ``recognise``,
    fn -> code | None) whatever recognise names. ValueError naming the argument when the table has
    no such function, or, for a gate, when it is not sigmoid or hard sigmoid."""
    if isinstance(fn, int) and not isinstance(fn, bool):
        code = fn if fn in FORWARD else None
    elif isinstance(fn, str):
        code = code_of_name(fn)
    else:
        code = recognise(fn) if recognise is not None else None
    if code is None:
        raise ValueError(f"{arg}={fn!r} is not a fused activation (fused: identity, relu, silu, relu6, "
                         "leaky_relu with slope 0.01, gelu, gelu_tanh, hardswish, sigmoid, hard_sigmoid)")
    if gate and not is_gate(code):
        raise ValueError(f"{arg}={fn!r} computes {activation_name(code)}: a fused gate is sigmoid or hard_sigmoid")
    return code
