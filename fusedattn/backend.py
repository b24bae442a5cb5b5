"""Which implementation an op runs: Triton kernels or the plain-PyTorch path.

``auto`` (default): Triton for CUDA tensors, plain PyTorch for CPU tensors.
``triton``: always Triton. CPU tensors then need Triton's interpreter
(``TRITON_INTERPRET=1`` set before triton is imported); the tests use this.
``torch``: always the plain-PyTorch path (e.g. to compare on a GPU).

Set it with the environment variable ``FUSEDATTN_BACKEND`` or in code with
``fusedattn.set_backend(name)`` / ``with fusedattn.use_backend(name): ...``.
"""
import contextlib
import os

import torch

BACKENDS = ("auto", "triton", "torch")
_backend = os.environ.get("FUSEDATTN_BACKEND", "auto")
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


def interpreter_enabled() -> bool:
    """True if fusedattn's kernels were built by Triton's interpreter (TRITON_INTERPRET=1
    was set when they were imported), so they run on CPU tensors."""
    from .kernels.channel_pool import channel_pool_kernel

    return type(channel_pool_kernel).__name__ == "InterpretedFunction"


def uses_triton(t: torch.Tensor) -> bool:
    """True if an op on tensor ``t`` runs the Triton kernels under the current backend."""
    if _backend == "torch":
        return False
    if t.device.type == "cuda":
        return True
    if _backend == "triton":
        if t.device.type == "cpu" and interpreter_enabled():
            return True
        raise RuntimeError(
            f"fusedattn backend 'triton' on a {t.device.type} tensor needs Triton's interpreter: "
            "set TRITON_INTERPRET=1 before importing fusedattn, or use backend 'auto'")
    return False


def op_implementation(fn):
    """Wrap an op's implementation: autocast off (the op decides its own precision: float32
    accumulation, float64 for float64, as the Triton kernels do) and, for CUDA inputs, the
    inputs' GPU as the current device (Triton launches on the current device)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
        on_gpu = torch.cuda.device(device) if device is not None and device.type == "cuda" \
            else contextlib.nullcontext()
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False), on_gpu:
            return fn(*args, **kwargs)
    return wrapper


def exporting() -> bool:
    """True while torch.onnx.export traces a model (either exporter): the functional ops then
    run their plain-PyTorch math inline, which exports as standard ONNX operators, instead of
    the opaque custom op (which no ONNX runtime knows)."""
    return torch.onnx.is_in_onnx_export()
