"""Bench suite setup: case lists per device, and a JSON writer for every figure.

Run: ``pytest bench --benchmark-only``. On a CUDA GPU: ResNet-50 stage shapes, and a
result file ``bench/results/<gpu>-<date>.json``. Elsewhere (CPU, or a plain test run):
tiny shapes that keep the suite alive in CI; results written only if
FUSEDATTN_BENCH_OUT names a file (or, with the full sweep, always).
"""
import datetime
import json
import os
import platform
import re
import sys
import types
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():  # as tests/conftest.py: before fusedattn's kernels are imported,
    os.environ.setdefault("TRITON_INTERPRET", "1")  # whichever directory pytest collects first
    # torchvision's CUDA wheel imports on a CPU torch without its fake-kernel registrations (timm needs it)
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))

import triton  # noqa: E402

from fusedattn.costmodel import interpreter_speed  # noqa: E402

interpreter_speed.install()

from cases import CUDA, DEVICE, GPU_DTYPES, GPU_SHAPES, TINY_DTYPES, TINY_SHAPES, full_sweep  # noqa: E402

RESULTS: list[dict] = []


def pytest_generate_tests(metafunc):
    full = full_sweep(metafunc.config)
    if "shape" in metafunc.fixturenames:
        metafunc.parametrize("shape", GPU_SHAPES if full else TINY_SHAPES, ids=lambda s: "x".join(map(str, s)))
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", GPU_DTYPES if full else TINY_DTYPES, ids=lambda d: str(d)[6:])


def pytest_sessionfinish(session, exitstatus):
    if not RESULTS:
        return
    out = os.environ.get("FUSEDATTN_BENCH_OUT")
    if out is None and not full_sweep(session.config):
        return
    write_results(out)
    print(f"\nbench results written to {out or 'bench/results/'}")


def write_results(out: str | None) -> None:
    """The result document of the rows so far, to ``out`` (None: bench/results/<gpu>-<time>.json)."""
    name = torch.cuda.get_device_name() if CUDA else (platform.processor() or "cpu")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if out is None:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
        out = Path(__file__).parent / "results" / f"{slug}-{stamp}.json"
    doc = {
        "device": name, "device_type": DEVICE.type, "time": stamp,
        "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
        "timing": "triton.testing.do_bench median (CUDA events, L2 flushed)" if CUDA else "host clock median",
        "definitions": {
            "inputs": "whole blocks: x of the case shape; psa_tail: four [B, C/4, H, W] splits; "
                      "sk_tail: two [B, C, H, W] paths (the branch outputs, separate tensors); "
                      "se_residual / eca_residual: x and the shortcut, relu(attn(x) + shortcut)",
            "bandwidth_gbs": "compulsory traffic / time: forward reads the inputs and writes y; fwd+bwd also "
                             "reads dy and the inputs again and writes their gradients (3 x inputs + 2 x y)",
            "copy_ratio": "time / time of x.clone() of the case shape in the same run (one read + one write)",
            "saved_bytes": "memory autograd keeps for backward beyond the inputs (see fusedattn.benchmark)",
        },
        "results": RESULTS,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(doc, indent=1))


@pytest.fixture
def record():
    def add(**row):
        RESULTS.append(row)
        out = os.environ.get("FUSEDATTN_BENCH_OUT")
        if out:   # after every row: a sweep killed at a lease's time limit keeps what it measured
            write_results(out)
    return add
