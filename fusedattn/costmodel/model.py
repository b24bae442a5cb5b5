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
CHUNKED = {"se", "eca", "ceca", "cbam", "se_residual", "eca_residual"}
SCALED_HW = 7


class ScaledCase(NamedTuple):
    case: Case
    B: int
    H: int
    W: int
    chunk_bytes: int
    target_programs: int
    l2_bytes: float


def n_chunks(case: Case, profile: GPUProfile) -> int:
    per_sample = case.C * case.H * case.W * DTYPES[case.dtype].itemsize
    chunk = max(1, min(case.B, profile.chunk_bytes // per_sample))
    return -(-case.B // chunk)


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
    return ScaledCase(case, B, H, W, chunk_bytes, max(4, round(profile.target_programs * ratio)),
                      profile.l2_bytes * ratio)


# ---- traffic under the interpreter (run in a subprocess: TRITON_INTERPRET=1) ------------

def count_case(case: Case, shape, chunk_bytes: int | None, target_programs: int | None, l2_bytes: float) -> list[dict]:
    """Per launch of ``case`` at ``shape`` (its pass, Triton under the interpreter, the given
    plan): kernel, the busiest program's loads, and per tensor argument [numel, HBM read, L2 read,
    written, requested bytes, data_ptr]."""
    from .. import backend
    from .traffic import count_traffic

    _, fused = make_pair(case)
    xs = make_inputs(case, shape)
    run = runner(fused, xs, case.pass_)
    saved = (config.chunk_bytes, config.target_programs, config.profile)
    config.chunk_bytes, config.target_programs, config.profile = chunk_bytes, target_programs, None
    try:
        with backend.use_backend("triton"), count_traffic() as rec:
            run()
    finally:
        config.chunk_bytes, config.target_programs, config.profile = saved
    return [{"kernel": lt.kernel, "loads": lt.max_loads_per_program,
             "args": [[a.numel, a.hbm_read, a.l2_read, a.write_bytes, a.requests, a.data_ptr] for a in lt.args]}
            for lt in rec.classify(l2_bytes)]


def count_scaled(sc: ScaledCase) -> list[dict]:
    """count_case on the scaled-down case (its fwd+bwd run: the forward's launches come first)."""
    return count_case(sc.case._replace(pass_="fwd+bwd"), (sc.B, sc.case.C, sc.H, sc.W), sc.chunk_bytes, sc.target_programs, sc.l2_bytes)


def count_in_subprocess(scaled_cases: list[ScaledCase], jobs: int = 2) -> list[list[dict]]:
    """count_scaled for each case, in ``jobs`` interpreter subprocesses."""
    payload = [[sc.case._asdict(), sc.B, sc.H, sc.W, sc.chunk_bytes, sc.target_programs, sc.l2_bytes]
               for sc in scaled_cases]
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


def real_sizes(launches) -> list[tuple[str, list[int]]]:
    """(kernel, numel of each tensor argument) of dry-run launches: what extrapolate scales to."""
    return [(launch.kernel, list(launch.tensor_numels)) for launch in launches]


def extrapolate(scaled_launches: list[dict], real: list[tuple[str, list[int]]]) -> list[dict]:
    """Scaled per-argument counts times (real size / scaled size) of each tensor argument."""
    names = [kernel for kernel, _ in real]
    if names != [s["kernel"] for s in scaled_launches]:
        raise AssertionError(f"plan structure differs: real {names} vs scaled {[s['kernel'] for s in scaled_launches]}")
    out = []
    for s, (_, numels) in zip(scaled_launches, real):
        hbm = l2 = write = req = 0.0
        for (numel, h, l, w, r, _), real_numel in zip(s["args"], numels):
            f = real_numel / numel if numel else 1.0
            hbm, l2, write, req = hbm + h * f, l2 + l * f, write + w * f, req + r * f
        out.append({"hbm_read": round(hbm), "l2_read": round(l2), "write": round(write), "requests": round(req),
                    "loads_per_program": s["loads"]})
    return out


# ---- roofline --------------------------------------------------------------------------

def kernel_us(hbm_bytes: float, l2_bytes: float, round_trips: int, profile: GPUProfile) -> float:
    bw = CONSTANTS["hbm_efficiency"] * profile.hbm_bytes_per_s
    stream = hbm_bytes / bw + l2_bytes / (CONSTANTS["l2_bandwidth_over_hbm"] * profile.hbm_bytes_per_s)
    return CONSTANTS["kernel_fixed_us"] + max(stream * 1e6, round_trips * CONSTANTS["round_trip_us"])


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
