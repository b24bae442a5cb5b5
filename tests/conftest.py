"""Test setup: without a GPU, Triton kernels run under the interpreter on CPU tensors.

TRITON_INTERPRET must be set before fusedattn (and so its @triton.jit kernels) is
imported, hence here, at the top of conftest.
"""
import os
import random
import sys
import types
import zlib

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    # torchvision's wheel from the index is a CUDA build: its fake-kernel registrations fail on a CPU
    # torch, its models (what timm needs) do not. An empty module in their place lets it import.
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))

import pytest  # noqa: E402

import fusedattn  # noqa: E402
from fusedattn.costmodel import interpreter_speed  # noqa: E402
from fusedattn.kernels import config  # noqa: E402

interpreter_speed.install()
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# the references' float32 convolutions and matmuls in float32, not TF32 (cuDNN's default on a GPU:
# 1.6e-4 off in CBAM's reference, first compiled run, H200)
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
SEED = int(os.environ.get("FUSEDATTN_TEST_SEED", random.SystemRandom().randrange(2**31)))
# pytest-xdist's workers inherit the controller's environment: one seed for the whole run
os.environ.setdefault("FUSEDATTN_TEST_SEED", str(SEED))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one pytest-xdist worker per core: a worker's intra-op threads would only fight the others'
    # (OpenMP threads spinning on a busy core made a float64 MobileNetV3 step 20x slower)
    torch.set_num_threads(1)


def interpreter_problem() -> str | None:
    """Why Triton's interpreter cannot run the kernels on this install, or None.

    Triton 3.6's interpreter turns a tensor loop bound into a Python int with int() of a
    one-element array, which numpy >= 2.4 refuses (TypeError in every kernel with a
    ``range(start, end)`` over program-dependent bounds); triton 3.7 fixed it.
    """
    import numpy
    import triton

    if os.environ.get("TRITON_INTERPRET") != "1":
        return None
    version = lambda v: tuple(int(p) for p in v.split(".")[:2])  # noqa: E731
    if version(triton.__version__) < (3, 7) and version(numpy.__version__) >= (2, 4):
        return (f"triton {triton.__version__}'s interpreter does not run with numpy {numpy.__version__}: "
                "install numpy<2.4 or triton>=3.7 for the CPU test run")
    return None


def pytest_configure(config):
    problem = interpreter_problem()
    if problem:
        raise pytest.UsageError(problem)


def pytest_report_header(config):
    return (f"fusedattn tests on {DEVICE} (TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}), "
            f"seed {SEED} (set FUSEDATTN_TEST_SEED to repeat)")


@pytest.fixture(autouse=True)
def _fresh_random_and_poison(request, monkeypatch):
    """Fresh random inputs per test (seed derived from the run's seed and the test id,
    printed in the header) and NaN-poisoned kernel outputs."""
    torch.manual_seed(SEED ^ zlib.crc32(request.node.nodeid.encode()))
    monkeypatch.setattr(config, "poison_outputs", True)


@pytest.fixture
def device():
    return DEVICE


@pytest.fixture
def deterministic_cudnn(monkeypatch):
    """cuDNN's deterministic algorithms (the unfused rows' branch convs, PyTorch's, on a GPU:
    its default float64 conv backward differs run to run)."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


@pytest.fixture(params=["triton", "torch"])
def backend(request):
    """Run a test through the Triton kernels and through the plain-PyTorch path."""
    with fusedattn.use_backend(request.param):
        yield request.param


@pytest.fixture
def triton_backend():
    with fusedattn.use_backend("triton"):
        yield "triton"


@pytest.fixture(params=["default-plan", "chunked-split"])
def pipeline(request, monkeypatch):
    """The default launch plan (SE / ECA forward at test shapes: one launch, kernels/one_launch.py),
    or the chunked pipeline with tiny L2 chunks and many H*W splits (multi-chunk, multi-split)."""
    if request.param == "chunked-split":
        monkeypatch.setattr(config, "one_launch", False)
        monkeypatch.setattr(config, "chunk_bytes", 1)      # one sample per chunk
        monkeypatch.setattr(config, "target_programs", 1 << 12)  # split H*W as far as it goes
    return request.param


def pytest_terminal_summary(terminalreporter):
    """The seed again at the end (the header is hidden under -q, as in CI)."""
    terminalreporter.write_line(f"fusedattn test seed {SEED} (FUSEDATTN_TEST_SEED={SEED} repeats this run)")
