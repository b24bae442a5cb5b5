"""NaN and +-inf in x: every fused route gives non-finite values exactly where the float64
reference does (output, input gradient, every parameter gradient, BatchNorm buffers) and the
reference's values everywhere else. No kernel may turn a NaN into a finite number (they did:
ReLU as max(h, 0) and the gradient mask h > 0 dropped NaN, tl.max skips it)."""
import pytest
import torch

import fusedattn
from blocks import BLOCKS, C, fused_copy
from fusedattn.kernels import config
from helpers import SAME64, rel_err

# the interpreter runs the kernels in numpy, which warns on every NaN it makes
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


#: Routes through the library: the plain-PyTorch path, the Triton kernels with the default plan,
#: the chunked pipeline with many H*W splits, and the MLP gate spread over programs.
ROUTES = ["torch", "triton", "triton-chunked-split", "triton-parallel-gate"]
#: (route, block); the spread gate exists for the channel MLPs (SE, CBAM) only
CASES = [(r, b) for r in ROUTES for b in BLOCKS if r != "triton-parallel-gate" or b.startswith(("se", "cbam"))]


@pytest.fixture
def route(request, monkeypatch):
    if request.param != "triton":
        monkeypatch.setattr(config, "one_launch", False)
    if request.param == "triton-chunked-split":
        monkeypatch.setattr(config, "chunk_bytes", 1)
        monkeypatch.setattr(config, "target_programs", 1 << 12)
    if request.param == "triton-parallel-gate":
        monkeypatch.setattr(config, "parallel_gate", True)
    with fusedattn.use_backend(request.param.split("-")[0]):
        yield request.param


def _run(module, x, dy):
    x = x.detach().requires_grad_(True)
    y = module(x)
    y.backward(dy)
    results = {"y": y.detach(), "dx": x.grad}
    results.update({f"d{n}": p.grad for n, p in module.named_parameters()})
    results.update({n: b for n, b in module.named_buffers() if b.is_floating_point()})
    return results


def _assert_same_nonfinite(got, want, what):
    assert got.keys() == want.keys(), what
    for name, w in want.items():
        g = got[name]
        assert g is not None and g.shape == w.shape, f"{what} {name}"
        finite = torch.isfinite(w)
        assert torch.equal(torch.isfinite(g), finite), (
            f"{what} {name}: {(~torch.isfinite(g)).sum().item()} non-finite values where the reference has "
            f"{(~finite).sum().item()} (of {w.numel()})")
        assert torch.equal(torch.isnan(g), torch.isnan(w)), f"{what} {name}: NaN where the reference has inf or back"
        assert torch.equal(g[torch.isinf(w)], w[torch.isinf(w)]), f"{what} {name}: infinities of other signs"
        assert rel_err(g[finite], w[finite], 1.0) <= SAME64 * 100, f"{what} {name}: finite values differ"


@pytest.mark.parametrize("where", ["element", "channel"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("route, block", CASES, indirect=["route"])
def test_nonfinite_values_where_the_reference_has_them(route, block, value, where, device):
    ref = BLOCKS[block]().double().to(device)
    fused = fused_copy(ref)
    x = torch.randn(2, C, 5, 5, dtype=torch.float64, device=device)
    if where == "element":
        x[1, 3, 2, 4] = value
    else:
        x[0, 5] = value
    dy = torch.randn(x.shape[0], *ref(x.detach()).shape[1:], dtype=torch.float64, device=device)
    ref = BLOCKS[block]().double().to(device)  # fresh buffers (the probe call above moved them)
    ref.load_state_dict(fused.state_dict())
    _assert_same_nonfinite(_run(fused, x, dy), _run(ref, x, dy), f"{block} {route} x={value} in one {where}")
