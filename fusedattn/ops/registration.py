"""A block's custom-op pair, fake impls, autograd and eager route from its two implementations.

``define_block`` is the one place that registers an op: ops/<block>.py keeps its argument checks
and its math (the Triton launchers on CUDA, the plain-PyTorch path on CPU) and hands over

- ``forward(*inputs) -> outputs`` and ``backward(*saved) -> gradients``, annotated (the annotations
  are the ops' schemas) and choosing their path with ``backend.uses_triton``;
- ``setup_context(ctx, inputs, outputs)`` (what backward needs) and ``gradients(ctx, run,
  *output_grads)``: one gradient per forward input, computed by calling ``run`` (the
  backward custom op under torch.compile, the implementation itself in eager mode).

It registers ``fusedattn::<name>_forward`` and ``fusedattn::<name>_backward`` with

- fake impls that are ``forward`` / ``backward`` themselves on the plain-PyTorch path, run on
  fake tensors: the fake outputs have the plain-PyTorch path's shapes, dtypes and strides by
  construction (no second description of them to drift), and ``torch.library.opcheck`` holds
  the Triton path's real outputs to them (tests/test_compile.py);
- backward outputs None (the gradient of an absent bias, of a missing shortcut) returned as
  empty tensors (a custom op returns tensors only; each its own, as outputs may not alias);
- gradients of inputs that need none (None, flags, frozen weights) set to None, in both routes;

and returns the block's ``Block`` (its routes: eager Function, custom op, ONNX inline math,
lean CPU math; ops/dispatch.py).
"""
import functools
from typing import Callable

import torch

from ..backend import first_tensor, op_implementation, plain_pytorch
from .dispatch import Block, EagerOp


def _none_as_empty(fn: Callable) -> Callable:
    """fn with each None in its output (a tuple or list) replaced by a fresh empty tensor."""
    @functools.wraps(fn)
    def wrapper(*args):
        out = fn(*args)
        if all(t is not None for t in out):
            return out
        like = first_tensor(args)
        return type(out)(t if t is not None else like.new_empty((0,)) for t in out)
    return wrapper


def _on_plain_pytorch(fn: Callable) -> Callable:
    """fn on the plain-PyTorch path (a fake impl: fn's own math on fake tensors)."""
    @functools.wraps(fn)
    def wrapper(*args):
        with plain_pytorch():
            return fn(*args)
    return wrapper


def keep_needed(grads, needs) -> tuple:
    """grads with None where ``needs`` (ctx.needs_input_grad: a bool per input, a list of bools
    for a tensor-list input) says the input needs no gradient."""
    return tuple(g if n is True else None if n is False else [gi if ni else None for gi, ni in zip(g, n)]
                 for g, n in zip(grads, needs))


def define_block(name: str, forward: Callable, backward: Callable, setup_context: Callable,
                 gradients: Callable, torch_math: Callable, cpu_math: Callable | None = None,
                 result: Callable = lambda out: out[0], kernels_only: bool = False) -> Block:
    """Register ``fusedattn::<name>_forward`` / ``fusedattn::<name>_backward`` (see the module
    docstring) and return the block's routes. torch_math: the forward's plain-PyTorch math
    (what ONNX export traces), cpu_math: the lean eager CPU math (ops/cpu_math.py) or None,
    result: the caller's outputs from the forward's tuple; kernels_only: the Triton path of
    forward and backward is kernel launches only (backend.op_implementation: autocast kept)."""
    backward_op = torch.library.custom_op(f"fusedattn::{name}_backward",
                                          op_implementation(_none_as_empty(backward), kernels_only=kernels_only),
                                          mutates_args=())
    backward_op.register_fake(_on_plain_pytorch(_none_as_empty(backward)))
    forward = op_implementation(forward, kernels_only=kernels_only)
    forward_op = torch.library.custom_op(f"fusedattn::{name}_forward", forward, mutates_args=())
    forward_op.register_fake(_on_plain_pytorch(forward))

    def op_gradients(ctx, *grads):
        return keep_needed(gradients(ctx, backward_op, *grads), ctx.needs_input_grad)

    forward_op.register_autograd(op_gradients, setup_context=setup_context)
    # eager: Nones stay (EagerOp masks by needs_input_grad)
    backward = op_implementation(backward, kernels_only=kernels_only)
    eager = EagerOp(f"{name.upper()}Function", forward, setup_context,
                    lambda ctx, *grads: gradients(ctx, backward, *grads))
    return Block(forward_op, eager, torch_math, cpu_math, result)
