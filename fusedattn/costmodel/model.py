"""The cost model of one case: launches as planned for a GPU profile, their traffic, a roofline
time for fused / eager / inductor, and the host time of a call.

Traffic is counted under the interpreter on a scaled-down case with the same plan structure
(the same launch sequence: same L2 chunk count, same kernels in the same order): the same C,
H and W cut to at most 7, the batch cut to the number of L2 chunks (one sample each; 2 when
the real batch fits one chunk). Each launch's counts are then extrapolated per tensor
argument by the ratio of that argument's size in the real launch (from the dry run) to its
size in the scaled one: activations scale with B*H*W, partials with their split count, weights
not at all. tests/test_costmodel.py checks this against a direct count.

Constants of the roofline (assumptions until a GPU session calibrates them; each is in the
JSON output):
- achievable HBM bandwidth: 90% of the profile's data-sheet peak;
- L2 bandwidth: 2.5x the HBM peak (re-reads of a chunk);
- fixed cost per kernel: 2 us (launch latency, first wave, tail);
- serial loads: 0.15 us per load instruction the busiest program issues (the gate kernels'
  loops over C): about 600 ns of L2/HBM latency with about four loads of a loop in flight
  (software pipelining), a floor on a kernel whose few programs loop;
- one SM: the profile's ``sm_bytes_per_s`` (100 GB/s) for the bytes the busiest program moves
  alone, a floor on a kernel with few, long programs (one program per sample; a gate reading
  all weights);
- host: 2.5 us per kernel launch for the driver (cuLaunchKernel / cudaLaunchKernel), added to
  the measured host time of the Python path;
- inductor: estimated from its documented fusion behaviour, not measured: the pointwise work
  fuses into the reductions' neighbours, so it makes the fused pipeline's passes over
  activations, but each from HBM (no L2 chunking), with the eager tiny GEMMs as extern kernels.
"""
import json
import os
import subprocess
import sys
from typing import NamedTuple


from ..kernels import config
from ..kernels.config import GPUProfile
from .cases import DTYPES, Case, make_inputs, make_pair, runner

CONSTANTS = {
    "hbm_efficiency": 0.9,
    "l2_bandwidth_over_hbm": 2.5,
    "kernel_fixed_us": 2.0,
    "round_trip_us": 0.15,
    "driver_launch_us": 2.5,
}
#: blocks whose launchers walk the batch in L2 chunks of samples
CHUNKED = {"se", "eca", "ceca", "cbam", "ultralytics_cbam", "se_residual", "eca_residual", "efficientnet_se",
           "mobilenetv3_se", "ese"}
SCALED_HW = 7


class ScaledCase(NamedTuple):
    case: Case
    B: int
    H: int
    W: int
    chunk_bytes: int
    target_programs: int
    l2_bytes: float
    one_launch: tuple | None = None   # the real case's plans (forward, backward: kernels/one_launch.py; then
    #                                   SE's cooperative forward, backward: kernels/se_cooperative.py), or the rule
    mlp_block_n: int | None = None   # the real case's rows per MLP-gate program (kernels/mlp_gate.py)


def chunk_samples(case: Case, profile: GPUProfile) -> int:
    """Samples per L2 chunk as an eager call plans them (config.planned_chunk_bytes: one chunk
    unless config.l2_chunks asks for L2 chunks, as a CUDA graph capture does)."""
    per_sample = case.C * case.H * case.W * DTYPES[case.dtype].itemsize
    return max(1, min(case.B, config.planned_chunk_bytes(profile) // per_sample))


def n_chunks(case: Case, profile: GPUProfile) -> int:
    return -(-case.B // chunk_samples(case, profile))


def scaled(case: Case, profile: GPUProfile) -> ScaledCase:
    """The scaled-down case with the real case's plan structure (see the module docstring)."""
    H, W = min(case.H, SCALED_HW), min(case.W, SCALED_HW)
    per_sample = case.C * H * W * DTYPES[case.dtype].itemsize
    chunks = n_chunks(case, profile) if case.block in CHUNKED else 1
    if chunks > 1:
        B, chunk_bytes = chunks, per_sample
    else:
        B, chunk_bytes = min(case.B, 2), 1 << 62
    ratio = (B * H * W) / (case.B * case.H * case.W)
    rows = min(1 << (chunk_samples(case, profile) - 1).bit_length(), 16)   # mlp_gate.mlp_tiles' rows
    return ScaledCase(case, B, H, W, chunk_bytes, max(4, round(profile.target_programs * ratio)),
                      profile.l2_bytes * ratio, mlp_block_n=rows)


# ---- traffic under the interpreter (run in a subprocess: TRITON_INTERPRET=1) ------------

def count_case(case: Case, shape, chunk_bytes: int | None, target_programs: int | None, l2_bytes: float,
               one_launch: tuple | None = None, mlp_block_n: int | None = None) -> list[dict]:
    """Per launch of ``case`` at ``shape`` (its pass, Triton under the interpreter, the given
    plan): kernel, programs, the busiest program's loads, and per tensor argument [numel, HBM read,
    L2 read, written, requested bytes, data_ptr, the busiest program's bytes]."""
    from .. import backend
    from .traffic import count_traffic

    _, fused = make_pair(case)
    xs = make_inputs(case, shape)
    run = runner(fused, xs, case.pass_)
    saved = (config.chunk_bytes, config.target_programs, config.profile, config.one_launch,
             config.one_launch_backward, config.cooperative, config.cooperative_backward, config.mlp_block_n)
    config.chunk_bytes, config.target_programs, config.profile = chunk_bytes, target_programs, None
    if one_launch is not None:
        config.one_launch, config.one_launch_backward, config.cooperative, config.cooperative_backward = one_launch
    config.mlp_block_n = mlp_block_n
    try:
        with backend.use_backend("triton"), count_traffic() as rec:
            run()
    finally:
        (config.chunk_bytes, config.target_programs, config.profile, config.one_launch,
         config.one_launch_backward, config.cooperative, config.cooperative_backward, config.mlp_block_n) = saved
    return [{"kernel": lt.kernel, "loads": lt.max_loads_per_program, "programs": _programs(lt.grid),
             "args": [[a.numel, a.hbm_read, a.l2_read, a.write_bytes, a.requests, a.data_ptr, a.program_bytes,
                       a.reread] for a in lt.args]}
            for lt in rec.classify(l2_bytes)]


def _programs(grid) -> int:
    n = 1
    for g in grid or (1,):
        n *= g
    return n


def count_scaled(sc: ScaledCase) -> list[dict]:
    """count_case on the scaled-down case (its fwd+bwd run: the forward's launches come first)."""
    return count_case(sc.case._replace(pass_="fwd+bwd"), (sc.B, sc.case.C, sc.H, sc.W), sc.chunk_bytes,
                      sc.target_programs, sc.l2_bytes, sc.one_launch, sc.mlp_block_n)


def count_in_subprocess(scaled_cases: list[ScaledCase], jobs: int = 2) -> list[list[dict]]:
    """count_scaled for each case, in ``jobs`` interpreter subprocesses."""
    payload = [[sc.case._asdict(), sc.B, sc.H, sc.W, sc.chunk_bytes, sc.target_programs, sc.l2_bytes,
                sc.one_launch, sc.mlp_block_n] for sc in scaled_cases]
    env = dict(os.environ, TRITON_INTERPRET="1")
    parts = [payload[i::jobs] for i in range(jobs)]
    procs = [subprocess.Popen([sys.executable, "-m", "fusedattn.costmodel.traffic_job"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env, text=True) for _ in parts]
    outs = [p.communicate(json.dumps(part))[0] for p, part in zip(procs, parts)]
    for p in procs:
        if p.returncode:
            raise RuntimeError(f"traffic subprocess failed ({p.returncode})")
    results = [json.loads(o) for o in outs]
    merged: list = [None] * len(payload)
    for j, res in enumerate(results):
        for k, r in enumerate(res):
            merged[j + k * jobs] = r
    return merged


def real_sizes(launches) -> list[tuple[str, list[int], int]]:
    """(kernel, numel of each tensor argument, programs) of dry-run launches: what extrapolate
    scales to."""
    return [(launch.kernel, list(launch.tensor_numels), launch.programs) for launch in launches]


def extrapolate(scaled_launches: list[dict], real: list[tuple]) -> list[dict]:
    """Scaled per-argument counts times (real size / scaled size) of each tensor argument. The
    busiest program's bytes scale with the argument's size per program (never below the scaled
    count: weights every program reads do not shrink when the grid grows)."""
    names = [r[0] for r in real]
    if names != [s["kernel"] for s in scaled_launches]:
        raise AssertionError(f"plan structure differs: real {names} vs scaled {[s['kernel'] for s in scaled_launches]}")
    out = []
    for s, (_, numels, *programs) in zip(scaled_launches, real):
        hbm = l2 = write = req = per_program = 0.0
        grid_ratio = programs[0] / s["programs"] if programs and s.get("programs") else 1.0
        for (numel, h, l, w, r, _, pb, rr), real_numel in zip(s["args"], numels):
            f = real_numel / numel if numel else 1.0
            # a program's re-reads scale with the argument (activations), or with the programs
            # when the argument does not grow (weights: each program reads them again)
            rr_real = rr * (grid_ratio if numel == real_numel else f)
            hbm, l2, write, req = hbm + h * f, l2 + (l - rr) * f + rr_real, write + w * f, req + r * f
            per_program += pb * max(f / grid_ratio, 1.0)
        out.append({"hbm_read": round(hbm), "l2_read": round(l2), "write": round(write), "requests": round(req),
                    "loads_per_program": s["loads"], "program_bytes": round(per_program)})
    return out


# ---- roofline --------------------------------------------------------------------------

def kernel_us(hbm_bytes: float, l2_bytes: float, round_trips: int, profile: GPUProfile,
              program_bytes: float = 0.0) -> float:
    bw = CONSTANTS["hbm_efficiency"] * profile.hbm_bytes_per_s
    stream = hbm_bytes / bw + l2_bytes / (CONSTANTS["l2_bandwidth_over_hbm"] * profile.hbm_bytes_per_s)
    one_sm = program_bytes / profile.sm_bytes_per_s
    return CONSTANTS["kernel_fixed_us"] + max(stream * 1e6, round_trips * CONSTANTS["round_trip_us"], one_sm * 1e6)


def eager_us(ops, profile: GPUProfile) -> float:
    return sum(kernel_us(o.read_bytes + o.write_bytes, 0, 0, profile) for o in ops)


def inductor_estimate(fused_launches: list[dict], eager_ops, profile: GPUProfile) -> dict:
    """See the module docstring: fused's passes, all from HBM, plus eager's GEMMs as extern kernels."""
    gemms = [o for o in eager_ops if o.name in ("convolution", "convolution_backward", "mm", "addmm", "bmm")]
    passes = [f for f in fused_launches if f["hbm_read"] + f["l2_read"] + f["write"] > 0]
    us = sum(kernel_us(f["hbm_read"] + f["l2_read"] + f["write"], 0, 0, profile) for f in passes
             if f["hbm_read"] + f["l2_read"] + f["write"] > 64 * 1024)
    us += sum(kernel_us(o.read_bytes + o.write_bytes, 0, 0, profile) for o in gemms)
    kernels = sum(1 for f in passes if f["hbm_read"] + f["l2_read"] + f["write"] > 64 * 1024) + len(gemms)
    hbm = sum(f["hbm_read"] + f["l2_read"] + f["write"] for f in passes) + sum(o.read_bytes + o.write_bytes
                                                                                for o in gemms)
    return {"kernels": kernels, "hbm_bytes": hbm, "us": us}
