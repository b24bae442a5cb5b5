"""The cost model's counters, and the budgets they enforce (python -m fusedattn.costmodel).

Under the interpreter with an H100-like plan (an L2 chunk is half the L2, and holds two
samples here, so the small case has three chunks as the goal case has five): bytes each block
moves in global memory, in units of x's size, and launches per call. A launcher change that
adds a pass over an activation, or a launch, fails here; so does an extrapolation of the model
that no longer matches a direct count.
"""
import os

import pytest

from fusedattn.costmodel.cases import DTYPES, Case
from fusedattn.costmodel.model import count_case, count_scaled, extrapolate, scaled
from fusedattn.kernels.config import GPUProfile

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="counts traffic under Triton's interpreter")

BLOCKS = ["se", "eca", "ceca", "cbam", "sk_tail", "psa_tail", "se_residual", "eca_residual"]

#: (HBM bytes read + written, L2 re-reads) / x's bytes, and launches per call, at the small case
#: below; fwd and fwd+bwd. The fused pipelines: SE/ECA forward read x once from HBM, once
#: more from L2 inside its chunk, write y once; backward reads dy and x and writes dx (its
#: re-reads miss L2: a chunk of dy and x fills the whole L2 at chunk = L2/2). CBAM's forward
#: reads x from HBM twice (its last pass runs outside the chunk loop); the SK and PSA tails have
#: no chunks (every pass from HBM).
BUDGETS = {
    ("se", "fwd"): (2.10, 1.03, 9), ("se", "fwd+bwd"): (6.26, 1.04, 20),
    ("eca", "fwd"): (2.04, 1.03, 9), ("eca", "fwd+bwd"): (6.11, 1.04, 19),
    ("ceca", "fwd"): (2.04, 1.03, 9), ("ceca", "fwd+bwd"): (6.11, 1.04, 19),
    ("cbam", "fwd"): (3.18, 1.05, 12), ("cbam", "fwd+bwd"): (10.71, 1.07, 26),
    ("sk_tail", "fwd"): (5.09, 0.02, 4), ("sk_tail", "fwd+bwd"): (11.30, 0.04, 10),
    ("psa_tail", "fwd"): (3.05, 0.02, 10), ("psa_tail", "fwd+bwd"): (7.13, 0.03, 22),
    ("se_residual", "fwd"): (3.10, 1.03, 9), ("se_residual", "fwd+bwd"): (10.26, 1.04, 23),
    ("eca_residual", "fwd"): (3.04, 1.03, 9), ("eca_residual", "fwd+bwd"): (10.11, 1.04, 22),
}
SLACK = 0.15  # small vectors and partials vary with the split plan; a pass over x is 1.0


def small_case(block, pass_, layout="channels_last"):
    return Case(block, 6, 64 if block == "psa_tail" else 32, 12, 12, "fp32", layout, pass_)


def h100_like(case):
    """An H100-shaped plan for the small case: chunk = L2 / 2 = two samples of x."""
    per_sample = case.C * case.H * case.W * DTYPES[case.dtype].itemsize
    return GPUProfile("h100-like", 132, 4 * per_sample, 3.35e12)


def x_bytes(case):
    return case.B * case.C * case.H * case.W * DTYPES[case.dtype].itemsize


def totals(launches):
    hbm = sum(a[1] + a[3] for launch in launches for a in launch["args"])
    return hbm, sum(a[2] for launch in launches for a in launch["args"])


@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("block", BLOCKS)
def test_passes_and_launches_within_budget(block, pass_):
    case = small_case(block, pass_)
    p = h100_like(case)
    launches = count_case(case, case.shape, p.chunk_bytes, p.target_programs, p.l2_bytes)
    hbm, l2 = totals(launches)
    budget_hbm, budget_l2, budget_launches = BUDGETS[block, pass_]
    x = x_bytes(case)
    assert hbm / x <= budget_hbm + SLACK, f"{block} {pass_}: HBM traffic {hbm / x:.2f} x > budget {budget_hbm}"
    assert len(launches) <= budget_launches, f"{block} {pass_}: {len(launches)} launches > {budget_launches}"
    # no L2 reuse lost silently either: a re-read that moved to HBM shows up in the HBM budget
    assert l2 / x <= budget_l2 + SLACK


@pytest.mark.parametrize("block", ["se", "cbam", "sk_tail", "psa_tail", "eca_residual"])
def test_extrapolation_matches_a_direct_count(block):
    """The model counts a scaled-down case and scales each tensor argument's bytes to the real
    case: against a direct count of the real case, launch by launch."""
    case = small_case(block, "fwd+bwd", layout="nchw")
    p = h100_like(case)
    direct = count_case(case, case.shape, p.chunk_bytes, p.target_programs, p.l2_bytes)
    estimate = extrapolate(count_scaled(scaled(case, p)), [(d["kernel"], [a[0] for a in d["args"]]) for d in direct])
    x = x_bytes(case)
    for i, (d, e) in enumerate(zip(direct, estimate)):
        for j, name in ((1, "hbm_read"), (2, "l2_read"), (3, "write")):
            counted = sum(a[j] for a in d["args"])
            assert abs(e[name] - counted) <= 0.01 * x, (block, i, d["kernel"], name, e[name], counted)


def test_a_pass_more_fails_the_budget(monkeypatch):
    """The budget test can fail: one more pass over x in SE's forward (the scale pass launched
    twice) exceeds the HBM budget."""
    from fusedattn.kernels import channel_gate

    scale = channel_gate.channel_scale

    def scale_twice(xv, yv, gate, plan, b0, nb, **kw):
        scale(xv, yv, gate, plan, b0, nb, **kw)
        scale(xv, yv, gate, plan, b0, nb, **kw)
    monkeypatch.setattr(channel_gate, "channel_scale", scale_twice)
    with pytest.raises(AssertionError, match="launches >|HBM traffic"):
        test_passes_and_launches_within_budget("se", "fwd")
