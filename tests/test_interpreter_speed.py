"""fusedattn.costmodel.interpreter_speed: applied in the CPU run, and it leaves Triton's language as it
found it after every launch, nested device-function calls included (Triton's own interpreter leaves
their patches in place: core.multiple_of, core.static_range, ... differ after a launch without it)."""
import os

import pytest
import torch

import fusedattn
from fusedattn.costmodel import interpreter_speed

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="Triton's interpreter only")


def _language_state():
    import triton.language as tl
    return ({("tl", n): v for n, v in vars(tl).items()} | {("core", n): v for n, v in vars(tl.core).items()}
            | {("tensor", n): v for n, v in vars(tl.tensor).items()})


def test_installed_and_language_restored_after_launches():
    import triton.runtime.interpreter as interpreter

    assert interpreter_speed.install()   # the conftest applied it; a second call is a no-op
    assert getattr(interpreter._patch_lang, "_fusedattn_once", False)
    assert not interpreter.interpreter_builder.options.sanitize_overflow
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64, requires_grad=True)
    block = fusedattn.CBAM(8, rd_channels=2).double()   # kernels with nested @triton.jit helpers
    with fusedattn.use_backend("triton"):
        block(x).sum().backward()   # first launches: Python adds a few class attributes lazily
        before = _language_state()
        block(x).sum().backward()
    after = _language_state()   # (Triton's own nested patches are never undone: core.multiple_of, ...)
    assert before.keys() == after.keys()
    changed = [k for k in before if before[k] is not after[k]]
    assert not changed, changed[:5]
