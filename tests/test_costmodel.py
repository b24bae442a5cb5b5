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
from fusedattn.kernels import config
from fusedattn.kernels.config import GPUProfile

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="counts traffic under Triton's interpreter")

BLOCKS = ["se", "eca", "ceca", "cbam", "ultralytics_cbam", "sk_tail", "psa_tail", "se_residual", "eca_residual",
          "efficientnet_se", "mobilenetv3_se", "ese", "coord", "simam"]

#: (HBM bytes read + written, L2 re-reads) / x's bytes, and launches per call, at the small case
#: below; fwd and fwd+bwd. L2 re-reads: bytes an earlier launch left in L2, and bytes a program
#: loads a second time. SE/ECA forward: one launch (kernels/one_launch.py) reads x once from HBM and
#: once more from L1/L2, writes y once; backward likewise reads dy and x once from HBM (dy
#: again from L1/L2) and writes dx, then one launch of weight gradients. With an epilogue
#: activation the backward is the chunked pipeline: with the eviction hints (issue 11, point 5:
#: dout and the last reads stream evict_first, x and dz stay evict_last) its re-reads of a chunk
#: hit L2 (10.2 x of HBM before the hints, 8.2 now).
#: CBAM's forward reads x from HBM twice (its last pass runs outside the chunk loop); its spatial
#: gate (kernels/spatial_gate.py, one program per pass at this size) moves the [B, HW] maps and
#: vectors, 1/C of x each (C = 32 here: about 0.1 x forward, 0.4 x fwd+bwd; 1/256 and less at the
#: ResNet stages), and its k x k taps re-read the maps from L1/L2 (2 k^2 loads per pixel and pass: the L2 column's 3 x forward, 12 x fwd+bwd here). The SK
#: and PSA tails have no chunks: SK's passes from HBM; PSA's scale passes find the last branches
#: their pool launches kept (evict_last) in L2 (the pool and scale of a branch are launches apart).
BUDGETS = {
    ("se", "fwd"): (2.04, 1.00, 1), ("se", "fwd+bwd"): (5.07, 2.06, 3),
    ("eca", "fwd"): (2.03, 1.02, 1), ("eca", "fwd+bwd"): (5.06, 2.05, 3),
    ("ceca", "fwd"): (2.03, 1.08, 1), ("ceca", "fwd+bwd"): (5.06, 2.24, 3),
    ("cbam", "fwd"): (2.92, 4.45, 13), ("cbam", "fwd+bwd"): (10.76, 13.68, 27),
    # YOLO's CBAM: CBAM's passes; its one-layer channel gate runs the parallel gate kernels (two backward
    # launches per chunk where CBAM's own gate has one)
    ("ultralytics_cbam", "fwd"): (2.96, 4.40, 13), ("ultralytics_cbam", "fwd+bwd"): (10.72, 10.54, 30),
    ("sk_tail", "fwd"): (5.09, 0.14, 4), ("sk_tail", "fwd+bwd"): (11.29, 1.24, 9),
    ("psa_tail", "fwd"): (2.55, 0.54, 10), ("psa_tail", "fwd+bwd"): (6.11, 1.10, 21),
    ("se_residual", "fwd"): (3.04, 1.00, 1), ("se_residual", "fwd+bwd"): (8.17, 3.04, 14),
    ("eca_residual", "fwd"): (3.03, 1.02, 1), ("eca_residual", "fwd+bwd"): (8.09, 3.14, 14),
    # the SE family of the mobile networks: timm SqueezeExcite (SiLU / sigmoid, ReLU / hard sigmoid) as SE;
    # the one-layer gate (EffectiveSE) in the chunked pipeline with the parallel gate kernels
    ("efficientnet_se", "fwd"): (2.04, 1.00, 1), ("efficientnet_se", "fwd+bwd"): (5.07, 2.06, 3),
    ("mobilenetv3_se", "fwd"): (2.04, 1.00, 1), ("mobilenetv3_se", "fwd+bwd"): (5.07, 2.06, 3),
    ("ese", "fwd"): (2.08, 1.11, 9), ("ese", "fwd+bwd"): (5.17, 2.27, 22),
    # Coordinate Attention: x read twice from HBM and y written once forward (strip means, strip scale),
    # backward x and dy once (strip gradient sums), dy again and dx once; plus the [B, C, H + W] strip
    # vectors (4 / H of x here, H = 12; 4 / 56 at 56 x 56). Triton launches only: its gate is PyTorch.
    ("coord", "fwd"): (3.33, 0.00, 2), ("coord", "fwd+bwd"): (7.84, 0.17, 4),
    # SimAM: B x channel blocks (6 here) is under half the target programs of this H100-like plan (528),
    # so H*W is split: partial statistics, then merge and output (x's second read from HBM here: the
    # small case is larger than its L2); the one-launch plan of larger batches: test below
    ("simam", "fwd"): (3.10, 0.02, 2), ("simam", "fwd+bwd"): (8.19, 0.05, 4),
}
#: The same for the chunked pipeline that SE runs when one program would be too slow (and SE /
#: ECA backward with an epilogue activation; config.one_launch = False forces it): per chunk pool,
#: gate, scale; x's second read in L2. SE's gate runs at the end of its pool launch (the last
#: program of each sample: kernels/se_pool_gate.py), 2 launches per chunk each way (3 chunks here)
#: where ECA has 3; its last programs' reads of the partials count as HBM here (written by the
#: same launch, so L2 on a GPU): 2.12 x forward.
PIPELINE_BUDGETS = {
    ("se", "fwd"): (2.08, 1.05, 6), ("eca", "fwd"): (2.04, 1.09, 9), ("ceca", "fwd"): (2.04, 1.09, 9),
    ("se", "fwd+bwd"): (5.18, 2.12, 13), ("eca", "fwd+bwd"): (5.09, 2.21, 19), ("ceca", "fwd+bwd"): (5.09, 2.22, 19),
    ("se_residual", "fwd"): (3.08, 1.05, 6), ("eca_residual", "fwd"): (3.04, 1.09, 9),
}
#: The pipeline with the MLP gate spread over many programs (kernels/mlp_gate.py: what SE and
#: CBAM run when their weights are wide; config.parallel_gate = True forces it): one launch more
#: per chunk (hidden, then gate) and no pass more over x. (config.one_launch = False here also
#: gives CBAM's spatial gate its many-program plan: one launch more forward, two backward.)
PARALLEL_GATE_BUDGETS = {
    ("se", "fwd"): (2.06, 1.07, 12), ("se", "fwd+bwd"): (5.14, 2.17, 25),
    ("cbam", "fwd"): (2.92, 4.46, 17), ("cbam", "fwd+bwd"): (10.70, 13.70, 36),
    ("se_residual", "fwd"): (3.06, 1.07, 12), ("se_residual", "fwd+bwd"): (8.20, 3.11, 28),
}
#: SE's cooperative forward (kernels/se_cooperative.py; config.cooperative = True forces it): one
#: launch; x read once from HBM, its second read (the tiles' rescale) from L2, y written once; the
#: partials and hidden shares the finalizers read (.cg, written by the same launch) and W2 rows per
#: tile add the rest.
COOPERATIVE_BUDGETS = {("se", "fwd"): (2.08, 1.23, 1), ("se_residual", "fwd"): (3.08, 1.23, 1),
                       ("efficientnet_se", "fwd"): (2.08, 1.23, 1)}
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


def check_budget(block, pass_, budgets):
    case = small_case(block, pass_)
    p = h100_like(case)
    launches = count_case(case, case.shape, p.chunk_bytes, p.target_programs, p.l2_bytes)
    hbm, l2 = totals(launches)
    budget_hbm, budget_l2, budget_launches = budgets[block, pass_]
    x = x_bytes(case)
    assert hbm / x <= budget_hbm + SLACK, f"{block} {pass_}: HBM traffic {hbm / x:.2f} x > budget {budget_hbm}"
    assert len(launches) <= budget_launches, f"{block} {pass_}: {len(launches)} launches > {budget_launches}"
    # no L2 reuse lost silently either: a re-read that moved to HBM shows up in the HBM budget
    assert l2 / x <= budget_l2 + SLACK


@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("block", BLOCKS)
def test_passes_and_launches_within_budget(block, pass_):
    check_budget(block, pass_, BUDGETS)


@pytest.mark.parametrize("pass_, budget", [("fwd", (2.02, 1.01, 1)), ("fwd+bwd", (5.03, 3.02, 2))])
def test_simam_one_launch_within_budget(pass_, budget):
    """SimAM at B x channel blocks above half the target programs: one launch each way, each program
    reading its slab twice (the second time from L1/L2), x written once; dy and x read likewise."""
    case = small_case("simam", pass_)
    launches = count_case(case, case.shape, None, 8, h100_like(case).l2_bytes)
    hbm, l2 = totals(launches)
    x = x_bytes(case)
    assert hbm / x <= budget[0] + SLACK and l2 / x <= budget[1] + SLACK and len(launches) <= budget[2]


#: ATen kernels a fused call runs besides its Triton launches (what the interpreter's traffic counts
#: miss; python -m fusedattn.costmodel adds them from the dry run): CoordAttn's gate on the strip
#: vectors (conv1, bn1, act, conv_h, conv_w, gate: 6 or 7 forward, 9 more backward) plus bn1's
#: running-statistics update in train() (4: num_batches_tracked, two lerp_, the unbiased variance)
TORCH_KERNELS = {("se", "fwd"): 0, ("se", "fwd+bwd"): 0, ("simam", "fwd"): 0, ("simam", "fwd+bwd"): 0,
                 ("coord", "fwd"): 11, ("coord", "fwd+bwd"): 20}


@pytest.mark.parametrize("block, pass_", sorted(TORCH_KERNELS))
def test_pytorch_kernels_besides_triton(block, pass_, monkeypatch):
    from fusedattn import backend
    from fusedattn.costmodel.cases import make_inputs, make_pair, runner
    from fusedattn.costmodel.eager import count_eager

    monkeypatch.setattr(config, "poison_outputs", False)   # the tests' NaN fills are no kernels of a call
    case = small_case(block, pass_)
    _, fused = make_pair(case)
    with backend.use_backend("triton"):
        ops = count_eager(runner(fused, make_inputs(case), pass_))
    # copy_: the interpreter's own transfers to and from its "device" memory
    names = [o.name for o in ops if o.name != "copy_"]
    assert len(names) <= TORCH_KERNELS[block, pass_], names


@pytest.mark.parametrize("block, pass_", sorted(PIPELINE_BUDGETS))
def test_pipeline_passes_and_launches_within_budget(block, pass_, monkeypatch):
    monkeypatch.setattr(config, "one_launch", False)
    check_budget(block, pass_, PIPELINE_BUDGETS)


@pytest.mark.parametrize("block, pass_", sorted(COOPERATIVE_BUDGETS))
def test_cooperative_passes_and_launches_within_budget(block, pass_, monkeypatch):
    monkeypatch.setattr(config, "cooperative", True)
    check_budget(block, pass_, COOPERATIVE_BUDGETS)


def test_cooperative_work_is_priced_as_shared(monkeypatch):
    """The interpreter runs the cooperative kernel's programs one after another, so the last
    program does every tile; the model prices each program at the launch's mean (traffic.SHARED_WORK:
    the tiles are shared on a GPU) plus the flag's chain of round trips, and every repeated read of x
    as an L2 read."""
    from fusedattn.costmodel.traffic import SHARED_WORK

    monkeypatch.setattr(config, "cooperative", True)
    case = small_case("se", "fwd")
    p = h100_like(case)
    (launch,) = count_case(case, case.shape, p.chunk_bytes, p.target_programs, p.l2_bytes)
    x, programs = x_bytes(case), launch["programs"]
    assert launch["kernel"] == "se_cooperative_kernel" and programs > 4
    per_program = sum(a[6] for a in launch["args"])
    assert per_program <= 1.5 * 3 * x / programs, (per_program, x, programs)   # x twice and y, shared
    assert SHARED_WORK["se_cooperative_kernel"] < launch["loads"] <= SHARED_WORK["se_cooperative_kernel"] + 12
    assert sum(a[7] for a in launch["args"]) >= x                              # the second read of x: L2


@pytest.mark.parametrize("block, parallel_gate", [("se", None), ("cbam", None), ("sk_tail", None), ("psa_tail", None),
                                                   ("eca_residual", None), ("se", True), ("cbam", True)])
def test_extrapolation_matches_a_direct_count(block, parallel_gate, monkeypatch):
    """The model counts a scaled-down case and scales each tensor argument's bytes to the real
    case: against a direct count of the real case, launch by launch (also with SE's and CBAM's
    gate over many programs, whose tiles depend on the rows of a chunk)."""
    monkeypatch.setattr(config, "parallel_gate", parallel_gate)
    monkeypatch.setattr(config, "one_launch", False if parallel_gate else None)
    monkeypatch.setattr(config, "l2_chunks", True)   # the graph-capture plan: several chunks to extrapolate
    case = small_case(block, "fwd+bwd", layout="nchw")
    p = h100_like(case)
    direct = count_case(case, case.shape, p.chunk_bytes, p.target_programs, p.l2_bytes)
    estimate = extrapolate(count_scaled(scaled(case, p)), [(d["kernel"], [a[0] for a in d["args"]], d["programs"]) for d in direct])
    x = x_bytes(case)
    # PSA's backward scale passes re-read dy_p from the L2 window of its pool launches (dy_p kept
    # evict_last, x_p and dx streamed evict_first): the window holds two of the four branches here,
    # and in the scaled case (its [B, C] vectors weigh 3x as much against x) one branch is left at
    # the edge of the window; so PSA's split of reads into HBM and L2 is compared over the call,
    # within one branch (x / 4), and launch by launch only as bytes read
    edge = block == "psa_tail"
    for i, (d, e) in enumerate(zip(direct, estimate)):
        for j, name in ((1, "hbm_read"), (2, "l2_read"), (3, "write")) if not edge else ((3, "write"),):
            counted = sum(a[j] for a in d["args"])
            # within 1% of x or of the launch's own count (CBAM's spatial taps: a halo pixel that two
            # programs read counts once as a re-read in the direct count, more programs than scaled)
            assert abs(e[name] - counted) <= max(0.01 * x, 0.01 * counted), (block, i, d["kernel"], name, e[name],
                                                                            counted)
        if edge:
            counted = sum(a[1] + a[2] for a in d["args"])
            assert abs(e["hbm_read"] + e["l2_read"] - counted) <= max(0.01 * x, 0.01 * counted), (block, i)
        # the busiest program's bytes: scaled by size per program; the scaled case's padding
        # (H*W = 49 in tiles of 64) can only overstate them
        counted = sum(a[6] for a in d["args"])
        assert 0.8 * counted <= e["program_bytes"] <= 1.5 * counted, (block, i, d["kernel"], e["program_bytes"], counted)
    if edge:
        counted, estimated = (sum(a[1] for d in direct for a in d["args"]), sum(e["hbm_read"] for e in estimate))
        assert abs(estimated - counted) <= 0.26 * x, (block, estimated, counted)


@pytest.mark.parametrize("block, pass_", sorted(PARALLEL_GATE_BUDGETS))
def test_parallel_gate_passes_and_launches_within_budget(block, pass_, monkeypatch):
    monkeypatch.setattr(config, "one_launch", False)
    monkeypatch.setattr(config, "parallel_gate", True)
    check_budget(block, pass_, PARALLEL_GATE_BUDGETS)


def test_l2_chunks_only_where_they_pay(monkeypatch):
    """The chunk rule (config.planned_chunk_bytes) and the model's copy of it: an eager call takes the
    batch as one chunk, a CUDA graph capture (or l2_chunks=True) half the L2; an explicit
    chunk_bytes wins. The goal case's model then plans 1 chunk, or 4 for a graph."""
    monkeypatch.setattr(config, "l2_chunks", None)   # the default (FUSEDATTN_L2_CHUNKS unset)
    h100 = config.PROFILES["h100"]
    assert config.planned_chunk_bytes(h100) == config.planned_chunk_bytes(None, True) == 1 << 62
    assert config.planned_chunk_bytes(h100, capturing=True) == h100.chunk_bytes == 25 * 2**20
    goal = Case("se", 64, 256, 56, 56, "bf16", "channels_last", "fwd")
    assert scaled(goal, h100).B == 2   # one chunk: the scaled case keeps two samples
    monkeypatch.setattr(config, "l2_chunks", True)
    assert config.planned_chunk_bytes(h100) == h100.chunk_bytes and scaled(goal, h100).B == 4
    monkeypatch.setattr(config, "chunk_bytes", 1)
    assert config.planned_chunk_bytes(h100, capturing=False) == 1


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
        test_pipeline_passes_and_launches_within_budget("se", "fwd", monkeypatch)


def test_a_pass_more_fails_the_one_launch_budget(monkeypatch):
    """Likewise for the one-launch plan: SE's forward launched twice."""
    from fusedattn.kernels import se

    once = se.se_one_launch

    def twice(*args):
        once(*args)
        once(*args)
    monkeypatch.setattr(se, "se_one_launch", twice)
    with pytest.raises(AssertionError, match="launches >|HBM traffic"):
        test_passes_and_launches_within_budget("se", "fwd")


def test_retime_keeps_the_pytorch_kernels_of_the_fused_path():
    """Re-timing a model file (after a calibration) prices the fused path's PyTorch kernels too, as
    the count did (it once summed the Triton launches alone: CoordAttn's forward fell from 123 to
    75 us in a re-timed file)."""
    from fusedattn.costmodel.__main__ import retime
    from fusedattn.costmodel.model import kernel_us

    h100 = config.PROFILES["h100"]
    row = {"hbm_read": 3e6, "l2_read": 1e6, "write": 2e6, "loads_per_program": 4, "program_bytes": 5e4}
    result = {"profile": h100._asdict(), "cases": [{"launches": [dict(row)], "fused": {
        "us": 0.0, "torch_ops": [["native_batch_norm", 4096], ["lerp_", 1024]]}}]}
    fused = retime(result)["cases"][0]["fused"]
    triton = kernel_us(3e6, 1e6, 4, h100, 5e4)
    assert fused["us"] == pytest.approx(triton + kernel_us(4096, 0, 0, h100) + kernel_us(1024, 0, 0, h100))


def _hinted_pair(first: str, write: str, n: int = 4096):
    """Traffic of two launches of a copy kernel over an n-element float32 x: the first reads x with
    eviction policy ``first`` into a, the second reads x again into b (its writes with ``write``)."""
    import torch
    import triton
    import triton.language as tl

    from fusedattn.costmodel.traffic import count_traffic

    @triton.jit
    def copy(src, dst, n, LOAD: tl.constexpr, STORE: tl.constexpr, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        v = tl.load(src + i, mask=i < n, eviction_policy=LOAD)
        tl.store(dst + i, v + 1.0, mask=i < n, eviction_policy=STORE)

    x = torch.randn(n)
    a, b = torch.empty_like(x), torch.empty_like(x)
    with count_traffic() as rec:
        copy[(n // 1024,)](x, a, n, LOAD=first, STORE="evict_first", BLOCK=1024)
        copy[(n // 1024,)](x, b, n, LOAD="", STORE=write, BLOCK=1024)
    assert torch.equal(b, x + 1.0)
    return rec, 4 * n


@pytest.mark.parametrize("first, hit", [("evict_last", True), ("", True), ("evict_first", False)])
def test_l2_model_follows_eviction_hints(first, hit):
    """A read with evict_first leaves nothing in the modeled L2 for the next launch; evict_last and
    no hint keep it (the L2 holds x and a launch's writes here)."""
    rec, x_bytes = _hinted_pair(first, "evict_first")
    second = rec.classify(8 * x_bytes)[1]
    x_arg = second.args[0]
    assert (x_arg.l2_read, x_arg.hbm_read) == ((x_bytes, 0) if hit else (0, x_bytes))


@pytest.mark.parametrize("write, hit", [("", False), ("evict_first", True)])
def test_l2_model_counts_a_launchs_own_writes(write, hit):
    """An L2 just larger than x: the second launch's re-read of x hits only where its own writes
    stream out with evict_first (half of them otherwise fill the L2 before a given read)."""
    rec, x_bytes = _hinted_pair("evict_last", write)
    second = rec.classify(1.25 * x_bytes)[1]
    assert second.args[0].l2_read == (x_bytes if hit else 0)
