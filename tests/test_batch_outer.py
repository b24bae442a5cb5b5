"""The weight-gradient sums over the batch (fusedattn.kernels.batch_outer) against float64 torch:
out = a^T f(v) and a_sum = sum_b a, two products in one launch, full and narrow tiles, partial tiles,
the batch in one run of steps per program or split over programs (the shares added in split order
by the tile's last program)."""
import pytest
import torch

from fusedattn.kernels import batch_outer
from fusedattn.kernels.activations import RELU
from fusedattn.kernels.arrival import _COUNTERS

from helpers import assert_close


@pytest.fixture(autouse=True)
def _on_device(device):
    with torch.device(device):
        yield


@pytest.fixture(params=["default", "split"])
def plan(request, monkeypatch):
    """default: the launcher's plan (up to MAX_STEPS steps per program); split: one step of at most
    2 rows per program, so every batch here is split over programs."""
    batch_outer._outer_plan.cache_clear()   # plans cached under the other constants
    if request.param == "split":
        monkeypatch.setattr(batch_outer, "MAX_STEPS", 1)
        monkeypatch.setattr(batch_outer, "PRODUCT_ELEMS", 2 * 8 * 8)
    yield request.param
    batch_outer._outer_plan.cache_clear()


def _reference(a, v, act):
    f = torch.relu if act == RELU else (lambda t: t)
    a64, v64 = a.double(), v.double()
    return a64.T @ f(v64), a64.sum(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("B, m1, n1, m2, n2", [(37, 24, 80, 80, 24), (5, 3, 7, 7, 3), (70, 16, 16, 16, 16)],
                         ids=["wide", "narrow", "square"])
@pytest.mark.parametrize("with_sum", [False, True])
def test_batch_outer_pair_matches_torch(plan, dtype, B, m1, n1, m2, n2, with_sum):
    a1, v1 = torch.randn(B, m1, dtype=dtype), torch.randn(B, n1, dtype=dtype)
    a2, v2 = torch.randn(B, m2, dtype=dtype), torch.randn(B, n2, dtype=dtype)
    outs = [torch.full((m1, n1), float("nan"), dtype=dtype), torch.full((m2, n2), float("nan"), dtype=dtype)]
    sums = [torch.full((m1,), float("nan"), dtype=dtype), torch.full((m2,), float("nan"), dtype=dtype)]
    first = batch_outer.Outer(a1, v1, outs[0], sums[0] if with_sum else None, v_act=RELU)
    second = batch_outer.Outer(a2, v2, outs[1], sums[1] if with_sum else None)
    batch_outer.batch_outer_pair(first, second)
    p = batch_outer._outer_plan(B, m1, n1, m2, n2, True)
    assert p.splits > 1 or plan == "default", p
    for (a, v, act), out, s in zip(((a1, v1, RELU), (a2, v2, 0)), outs, sums):
        ref, ref_sum = _reference(a, v, act)
        assert_close(out, ref, dtype, f"out {plan}")
        if with_sum:
            assert_close(s, ref_sum, dtype, f"a_sum {plan}")
        else:
            assert s.isnan().all()
    assert all(not c.any() for c in _COUNTERS.values())


def test_batch_outer_bitwise_repeatable(plan):
    a, v = torch.randn(45, 40), torch.randn(45, 24)
    runs = []
    for _ in range(2):
        out, s = torch.empty(40, 24), torch.empty(40)
        batch_outer.batch_outer_pair(batch_outer.Outer(a, v, out, s), None)
        runs.append((out, s))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
