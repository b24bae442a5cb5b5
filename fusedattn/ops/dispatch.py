"""How a functional op runs its block, in one place.

Each block has one implementation (``impl``: Triton kernels on CUDA, plain PyTorch on CPU,
chosen by ``fusedattn.backend``), one ``setup_context`` and one ``backward``. They are run:

- under ``torch.compile`` / ``torch.export`` tracing: through the ``torch.library`` custom op,
  so the graph holds one opaque node per block (fake impl, registered autograd);
- while ``torch.onnx.export`` traces: as the block's plain-PyTorch math, inline;
- in eager mode with the Triton kernels: through a ``torch.autograd.Function`` over the same
  impl, setup_context and backward (or the impl alone when no gradient is needed). This skips
  the custom op's dispatch (default filling, its Python autograd wrapper), which cost more host
  time than the whole eager block it replaces;
- in eager mode on the plain-PyTorch path (CPU tensors): the block's lean plain-PyTorch math
  under PyTorch's own autograd (SE, ECA, CBAM: ops/cpu_math.py), so a fused module on CPU costs
  no more than the eager module it replaces; blocks without one (PSA, SK) take the Function
  with their mirrored plain-PyTorch backward.

The Function and the custom op run the same functions, so their results and gradients are
identical; the CPU routes agree to rounding (tests/test_dispatch.py).
"""
import warnings
from typing import Callable

import torch

from ..backend import exporting, op_implementation, uses_triton
from .unsupported import FUNCTORCH, once_differentiable, unsupported


# While torch.jit.trace (or the legacy ONNX exporter) traces, sizes are tensors, and each of
# fusedattn's argument checks on them would warn that the trace takes the comparison as a constant.
# It is one: the checks only raise, and the traced math (the blocks' plain-PyTorch math, below)
# does not branch on them. PyTorch quiets its own library code the same way
# (torch.jit.TracerWarning.ignore_lib_warnings).
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"(.*[/\\])?fusedattn[./\\]")


def _flatten(args: tuple) -> tuple[int, tuple]:
    """(length of the list argument or -1, args with that list spliced in). Only an op's
    first argument may be a list (the branch tensors of PSA and SK)."""
    if isinstance(args[0], (list, tuple)):
        return len(args[0]), (*args[0], *args[1:])
    return -1, args


def _unflatten(n: int, flat: tuple) -> tuple:
    return (list(flat[:n]), *flat[n:]) if n >= 0 else flat


class EagerOp:
    """An op's impl + setup_context + backward as a ``torch.autograd.Function`` (eager mode).
    Its backward is a fixed computation (Triton kernels, or SK's and PSA's mirrored math), so double
    backward and torch.func's transforms raise fusedattn's UnsupportedTransformError."""

    def __init__(self, name: str, impl: Callable, setup_context: Callable, backward: Callable):
        self.impl = impl
        self.block = name.removesuffix("Function")

        def forward(ctx, n_list, *flat):
            inputs = _unflatten(n_list, flat)
            out = impl(*inputs)
            setup_context(ctx, inputs, out)
            if len(out) > 1:
                ctx.mark_non_differentiable(*out[1:])
            # the saved vectors' gradients stay None instead of zero tensors made for nothing
            ctx.set_materialize_grads(False)
            ctx.n_flat = len(flat)
            return tuple(out)

        def backward_flat(ctx, *grads):
            if grads[0] is None:   # the block's output got no gradient: neither do its inputs
                return (None,) * (1 + ctx.n_flat)
            grads = backward(ctx, *grads)
            if isinstance(grads[0], (list, tuple)):
                grads = (*grads[0], *grads[1:])
            return (None, *(g if need else None for g, need in zip(grads, ctx.needs_input_grad[1:])))

        self.function = type(name, (torch.autograd.Function,), {
            "forward": staticmethod(forward),
            "backward": staticmethod(once_differentiable(self.block, backward_flat))})

    def __call__(self, *args) -> tuple:
        if torch._C._functorch.maybe_current_level() is not None:  # inside vmap, grad, jacrev, jvp, ...
            raise unsupported("torch.func transforms (grad, vjp, vmap, jacrev, jacfwd, jvp, hessian)",
                              self.block, FUNCTORCH)
        n, flat = _flatten(args)
        if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in flat):
            return self.function.apply(n, *flat)
        return self.impl(*args)


def plain_eager(x: torch.Tensor) -> bool:
    """True if a block on x may run its lean plain-PyTorch math directly: eager mode on the torch
    backend, autocast off (under autocast, ``Block`` turns it off around the math)."""
    return (not uses_triton(x) and not torch.compiler.is_compiling() and not exporting()
            and not torch.is_autocast_enabled("cpu"))  # is_compiling first: dynamo must not read exporting()


class Block:
    """The routes of one block: its custom op, its eager Function, the plain math the op runs on
    CPU (``torch_math``, also what ONNX export traces) and the lean CPU math of eager mode
    (``cpu_math``, ops/cpu_math.py). ``result`` picks the caller's outputs from the op's tuple;
    ``cpu_math`` returns them directly."""

    def __init__(self, op: Callable, eager: EagerOp, torch_math: Callable, cpu_math: Callable | None = None,
                 result: Callable = lambda out: out[0]):
        self.op, self.eager, self.result = op, eager, result
        self.torch_math = op_implementation(torch_math)
        self.cpu_math = cpu_math

    def __call__(self, *args):
        """The block's result for ``args`` (the custom op's argument list), by the route above."""
        if torch.compiler.is_compiling():  # dynamo traces torch.onnx's public check, not its flags
            if torch.onnx.is_in_onnx_export():
                return self.result(self.torch_math(*args))
            return self.result(self.op(*args))
        if exporting() or torch._C._is_tracing():  # torch.onnx.export, torch.jit.trace: standard ops
            return self.result(self.torch_math(*args))
        x = args[0][0] if isinstance(args[0], (list, tuple)) else args[0]
        if self.cpu_math is None or uses_triton(x):
            return self.result(self.eager(*args))
        if torch.is_autocast_enabled("cpu"):  # the block keeps its own precision, as the op does
            with torch.autocast("cpu", enabled=False):
                out = self.cpu_math(*args)
        else:
            out = self.cpu_math(*args)
        return out[0] if len(out) == 1 else out
