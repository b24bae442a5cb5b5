"""Which implementation an op runs: Triton kernels or the plain-PyTorch path.

``auto`` (default): Triton for CUDA tensors, plain PyTorch for CPU tensors.
``triton``: always Triton. CPU tensors then need Triton's interpreter
(``TRITON_INTERPRET=1`` set before triton is imported); the tests use this.
``torch``: always the plain-PyTorch path (e.g. to compare on a GPU).

Set it with the environment variable ``FUSEDATTN_BACKEND`` or in code with
``fusedattn.set_backend(name)`` / ``with fusedattn.use_backend(name): ...``.
"""
import contextlib
import functools
import os
import threading

import torch

BACKENDS = ("auto", "triton", "torch")
#: Set by fusedattn.costmodel.dryrun while it records launches: Triton on CPU tensors, no interpreter.
recording_launches = False
_backend = os.environ.get("FUSEDATTN_BACKEND", "auto")


class _ThreadState(threading.local):
    """plain_pytorch() on this thread (the ops' fake impls: the plain-PyTorch path on fake tensors).
    A class default, not getattr(local, name, default): a missing thread-local attribute raises
    and catches an AttributeError inside getattr, which cost 8 us a call in a 45 us CPU block."""
    plain = False


_this_thread = _ThreadState()
if _backend not in BACKENDS:
    raise ValueError(f"FUSEDATTN_BACKEND must be one of {BACKENDS}, got {_backend!r}")


def get_backend() -> str:
    return _backend


def set_backend(name: str) -> None:
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    _backend = name


@contextlib.contextmanager
def use_backend(name: str):
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


@contextlib.contextmanager
def plain_pytorch():
    """The plain-PyTorch path on this thread, whatever the backend and device: the custom ops'
    fake impls run it on fake tensors (ops/registration.py)."""
    previous = _this_thread.plain
    _this_thread.plain = True
    try:
        yield
    finally:
        _this_thread.plain = previous


@functools.lru_cache(maxsize=None)
def interpreter_enabled() -> bool:
    """True if fusedattn's kernels were built by Triton's interpreter (TRITON_INTERPRET=1
    was set when they were imported), so they run on CPU tensors (fixed at import: cached)."""
    from .kernels.channel_pool import channel_pool_kernel

    return type(channel_pool_kernel).__name__ == "InterpretedFunction"


def uses_triton(t: torch.Tensor) -> bool:
    """True if an op on activation ``t`` [B, ...] runs the Triton kernels under the current
    backend. Never for an empty batch (B = 0): no kernel has work there, and the plain-PyTorch
    math returns the empty outputs and zero weight gradients on any device."""
    if _backend == "torch" or t.shape[0] == 0 or _this_thread.plain:
        return False
    if t.is_cuda:   # (not t.device.type: a torch.device object per call)
        return True
    if _backend == "triton":
        if t.is_cpu and (recording_launches or interpreter_enabled()):
            return True
        raise RuntimeError(
            f"fusedattn backend 'triton' on a {t.device.type} tensor needs Triton's interpreter: "
            "set TRITON_INTERPRET=1 before importing fusedattn, or use backend 'auto'")
    return False


def op_implementation(fn, kernels_only: bool = False):
    """Wrap an op's implementation: autocast off (the op decides its own precision: float32
    accumulation, float64 for float64, as the Triton kernels do) and, for CUDA inputs, the
    inputs' GPU as the current device (Triton launches on the current device). Each context is
    entered only when it changes something. kernels_only: fn's Triton path runs no ATen math that
    autocast would change (allocations and launches only: SE, ECA), so a call on that path keeps
    autocast as it is (its two contexts cost 11 us a call on the CI machine)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        first = first_tensor(args)   # x, or dy for a backward (same device and batch)
        if first.is_cuda:
            device = first.device
            if device.index is not None and device.index != torch.cuda.current_device():
                with torch.cuda.device(device):
                    return wrapper(*args, **kwargs)
        if _any_autocast() and not (kernels_only and uses_triton(first)):
            with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)
    return wrapper


#: autocast on for any device type (one C call; the public per-device checks take two)
_any_autocast = getattr(torch._C, "_is_any_autocast_enabled", None) or (
    lambda: torch.is_autocast_enabled("cuda") or torch.is_autocast_enabled("cpu"))


def first_tensor(args) -> torch.Tensor:
    """An op's first tensor argument (or the first tensor of its leading list argument)."""
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
        if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor):
            return a[0]
    raise TypeError("an op needs at least one tensor argument")


try:  # the two flags torch.onnx.is_in_onnx_export() reads, read directly (a call per op)
    from torch.onnx._internal.exporter import _flags as _dynamo_export_flags
    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS as _torchscript_export_globals
    _torchscript_export_globals._in_onnx_export, _dynamo_export_flags._is_onnx_exporting  # (both there?)

    def exporting() -> bool:
        """True while torch.onnx.export traces a model (either exporter): the functional ops then
        run their plain-PyTorch math inline, which exports as standard ONNX operators, instead of
        the opaque custom op (which no ONNX runtime knows). (The field behind GLOBALS.in_onnx_export,
        not the property: a call less on every block call.)"""
        return _torchscript_export_globals._in_onnx_export or _dynamo_export_flags._is_onnx_exporting
except (ImportError, AttributeError):  # another torch layout: the public call
    def exporting() -> bool:
        """True while torch.onnx.export traces a model (either exporter)."""
        return torch.onnx.is_in_onnx_export()
