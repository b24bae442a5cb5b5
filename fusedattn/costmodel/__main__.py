"""python -m fusedattn.costmodel: the speed of every block as a GPU of a named profile would see it,
computed on a CPU machine (a model, not a measurement).

    python -m fusedattn.costmodel [--profile h100] [--quick] [--out bench/results/model-h100-DATE.json]

For each case (fusedattn/costmodel/cases.py): every launch and its grid as the launchers plan
it for the profile; each kernel variant as the JIT specializes it, compiled for sm_90 (registers,
spills, global load/store widths from the PTX); bytes counted under the interpreter (first reads
from HBM, re-reads from L2, writes); a roofline time for fused, eager (its ATen kernels and
bytes counted over the reference) and inductor (estimated); the host time of a call. Writes the
JSON, prints the README's model table (``--readme`` rewrites it in README.md).
"""
import argparse
import datetime
import json
import os
import pathlib
import sys
import time

import torch

from ..kernels import config
from . import cases as cases_mod
from .cases import Case, all_cases, make_inputs, make_pair, runner
from .dryrun import dry_run, variant_report
from .eager import count_eager
from .host import interleaved_us
from .model import (CONSTANTS, count_in_subprocess, eager_us, extrapolate, inductor_estimate, kernel_us, real_sizes,
                    scaled)


def plan(case: Case):
    """(launches of the fwd+bwd run, number of them in the forward, {pass: the ATen kernels the
    fused path runs besides its Triton launches}) on the dry-run driver: Triton's launches are
    recorded, not made; the PyTorch ops around them (CoordAttn's gate on the strip vectors, a
    partials' sum, a layout copy) run on CPU tensors and are counted as eager counts its ops."""
    _, fused = make_pair(case._replace(pass_="fwd+bwd"))
    xs = make_inputs(case, requires_grad=True)
    with dry_run() as launches:
        with torch.no_grad():
            fused(*xs)   # once first: what a first call allocates for good (arrival counters) is no per-call work
            launches.clear()
            forward_ops = count_eager(lambda: fused(*xs))
        n_fwd = len(launches)
        launches.clear()

        forward_launches = []

        def forward_backward():
            y = fused(*xs)
            forward_launches.append(len(launches))
            y.backward(torch.empty_like(y))
        both_ops = count_eager(forward_backward)
        n_fwd_grad = forward_launches[0]
    assert n_fwd == n_fwd_grad, (case, n_fwd, n_fwd_grad)
    return list(launches), n_fwd, {"fwd": forward_ops, "fwd+bwd": both_ops}


def host_times(case: Case, n_launches: int, eager_kernels: int, rounds: int = 15) -> dict:
    """Microseconds of host time per call: the fused Triton path on the dry-run driver (all of
    Python, binding and specialization; the driver's launch replaced by the constant), and the
    eager reference on CPU tensors of the case's C at B <= 2, H = W = 1 (the same ATen ops with
    negligible arithmetic) plus the same constant per kernel; also both on this CPU for real at a
    small case (the CPU route a fused module takes on CPU tensors)."""
    ref, fused = make_pair(case)
    small = (min(case.B, 2), case.C, 1, 1)
    xs_ref = make_inputs(case, small)
    xs = make_inputs(case)
    with dry_run(record=False):
        run_fused = runner(fused, xs, case.pass_)
        run_fused()
        t = interleaved_us({"fused": run_fused, "eager": runner(ref, xs_ref, case.pass_)}, calls=3, rounds=rounds)
    launch = CONSTANTS["driver_launch_us"]
    return {"fused_us": t["fused"] + n_launches * launch, "eager_us": t["eager"] + eager_kernels * launch,
            "fused_python_us": t["fused"], "eager_python_us": t["eager"]}


def model_cases(selected: list[Case], profile, with_host: bool, jobs: int) -> list[dict]:
    config.profile = profile
    spent = dict.fromkeys(("plans (dry run, sm_90 compiles)", "traffic (interpreter)", "variant reports (ptxas)",
                           "eager counts", "host times"), 0.0)
    clock = time.perf_counter()
    plans = {}
    for case in {c._replace(pass_="fwd+bwd") for c in selected}:
        plans[case] = plan(case)
    spent["plans (dry run, sm_90 compiles)"] = time.perf_counter() - clock
    keys = sorted(plans, key=lambda c: c.key)
    def one_program(launches):
        names = [launch.kernel for launch in launches]
        if any(n.startswith("simam_") for n in names):   # SimAM: one launch each way unless H*W is split
            return not any(n in ("simam_statistics_kernel", "simam_grad_sums_kernel") for n in names)
        return any("one_launch" in n or n.endswith("_small_kernel") for n in names)

    # config.one_launch: the one-launch blocks' and the spatial gate's plan (one rule for both passes);
    # config.one_launch_backward: SE's backward, which a sample may not fit where its forward does
    # config.cooperative(_backward): SE's cooperative forward and backward (kernels/se_cooperative.py)
    def cooperative(launches, name):
        return any(launch.kernel == name for launch in launches)
    one_launch = {c: (one_program(plans[c][0]), one_program(plans[c][0][plans[c][1]:]),
                      cooperative(plans[c][0][:plans[c][1]], "se_cooperative_kernel"),
                      cooperative(plans[c][0][plans[c][1]:], "se_cooperative_backward_kernel"))
                  for c in keys}
    clock = time.perf_counter()
    counted = dict(zip(keys, count_in_subprocess([scaled(c, profile)._replace(one_launch=one_launch[c]) for c in keys],
                                                 jobs)))
    spent["traffic (interpreter)"] = time.perf_counter() - clock
    reports = {}
    out = []
    for case in selected:
        launches, n_fwd, torch_ops = plans[case._replace(pass_="fwd+bwd")]
        torch_ops = torch_ops[case.pass_]
        traffic = extrapolate(counted[case._replace(pass_="fwd+bwd")], real_sizes(launches))
        if case.pass_ == "fwd":
            launches, traffic = launches[:n_fwd], traffic[:n_fwd]
        rows = []
        for launch, tr in zip(launches, traffic):
            key = id(launch.metadata)
            if key not in reports:
                clock = time.perf_counter()
                reports[key] = variant_report(launch)
                spent["variant reports (ptxas)"] += time.perf_counter() - clock
            rep = reports[key]
            rows.append({"kernel": launch.kernel, "grid": list(launch.grid), "programs": launch.programs,
                         "warps": launch.num_warps, "registers": rep.registers, "spill_bytes": rep.spill_bytes,
                         "load_bits": list(rep.load_bits), "store_bits": list(rep.store_bits), **tr,
                         "us": kernel_us(tr["hbm_read"], tr["l2_read"], tr["loads_per_program"], profile,
                                         tr["program_bytes"])})
        clock = time.perf_counter()
        ref, _ = make_pair(case, device="meta")
        ops = count_eager(runner(ref, make_inputs(case, device="meta"), case.pass_))
        spent["eager counts"] += time.perf_counter() - clock
        x_bytes = case.B * case.C * case.H * case.W * cases_mod.DTYPES[case.dtype].itemsize
        entry = {
            "case": case._asdict(), "key": case.key, "x_bytes": x_bytes,
            "launches": rows,
            # the fused path's PyTorch kernels (not in the interpreter's traffic counts): their bytes go to HBM
            "fused": {"kernels": len(rows) + len(torch_ops),
                      "hbm_read": sum(r["hbm_read"] for r in rows) + sum(o.read_bytes for o in torch_ops),
                      "l2_read": sum(r["l2_read"] for r in rows),
                      "write": sum(r["write"] for r in rows) + sum(o.write_bytes for o in torch_ops),
                      "us": sum(r["us"] for r in rows) + eager_us(torch_ops, profile),
                      "torch_ops": [[o.name, o.read_bytes + o.write_bytes] for o in torch_ops]},
            "eager": {"kernels": len(ops), "bytes": sum(o.read_bytes + o.write_bytes for o in ops),
                      "us": eager_us(ops, profile), "ops": [[o.name, o.read_bytes + o.write_bytes] for o in ops]},
            "inductor": inductor_estimate(traffic, ops, profile),
        }
        if with_host:
            clock = time.perf_counter()
            entry["host"] = host_times(case, len(rows) + len(torch_ops), len(ops))
            spent["host times"] += time.perf_counter() - clock
        out.append(entry)
    config.profile = None
    print(f"{len(selected)} cases: " + ", ".join(f"{k} {v:.0f} s" for k, v in spent.items()), file=sys.stderr)
    return out


#: Rounds of the issue's host cases (the parity verdict): this machine's noise is 10 to 30% per
#: short run, so they get four times the rounds of the per-case host column.
HOST_CASE_ROUNDS = 60


def host_cases():
    """The issue's host-time cases, SE, ECA, CBAM at 1x64x4x4 and 8x256x14x14, fp32, NCHW, forward and
    forward+backward: (case, fused launches of the call, eager kernels of the call); config.profile set."""
    for block in ("se", "eca", "cbam"):
        for shape in ((1, 64, 4, 4), (8, 256, 14, 14)):
            for pass_ in ("fwd", "fwd+bwd"):
                case = Case(block, *shape, "fp32", "nchw", pass_)
                launches, n_fwd, torch_ops = plan(case)
                n = (n_fwd if pass_ == "fwd" else len(launches)) + len(torch_ops[pass_])
                ref, _ = make_pair(case, device="meta")
                yield case, n, len(count_eager(runner(ref, make_inputs(case, device="meta"), pass_)))


def triton_path_host_times(profile) -> list[dict]:
    """host_times() at host_cases()."""
    config.profile = profile
    try:
        return [{"key": case.key, "launches": n, "eager_kernels": kernels,
                 **host_times(case, n, kernels, rounds=HOST_CASE_ROUNDS)} for case, n, kernels in host_cases()]
    finally:
        config.profile = None


def cpu_route_host_times() -> list[dict]:
    """The issue's host-time cases on this CPU for real: fused SE, ECA, CBAM (CPU route) against
    the eager reference modules, forward and forward+backward, interleaved."""
    rows = []
    for block in ("se", "eca", "cbam"):
        for shape in ((1, 64, 4, 4), (8, 256, 14, 14)):
            for pass_ in ("fwd", "fwd+bwd"):
                case = Case(block, *shape, "fp32", "nchw", pass_)
                ref, fused = make_pair(case)
                xs = make_inputs(case)
                calls = 20 if shape[0] == 1 else 3
                t = interleaved_us({"eager": runner(ref, xs, pass_), "fused": runner(fused, xs, pass_)},
                                   calls=calls, rounds=40)
                rows.append({"key": case.key, "eager_us": t["eager"], "fused_us": t["fused"],
                             "ratio": t["fused"] / t["eager"]})
    return rows


def measured_us(results_dir: pathlib.Path = pathlib.Path("bench/results")) -> tuple[dict, str | None]:
    """{(block, B, C, H, W, dtype, layout, pass): {provider: us}} from the newest GPU benchmark
    file of bench/results (bench/gpu_session.sh writes it), and that file's name."""
    files = []
    for f in results_dir.glob("*.json"):
        doc = json.loads(f.read_text())
        if doc.get("device_type") == "cuda" and any(r.get("kind") != "model" for r in doc.get("results", [])):
            files.append((doc["time"], f, doc))
    if not files:
        return {}, None
    _, path, doc = max(files, key=lambda t: t[0])
    names = {"bfloat16": "bf16", "float32": "fp32", "forward": "fwd"}
    out: dict = {}
    for r in doc["results"]:
        if r.get("kind") == "model":
            continue
        key = (r["block"], *r["shape"], names.get(r["dtype"], r["dtype"]), r["layout"], names.get(r["pass_"], r["pass_"]))
        out.setdefault(key, {})[r["provider"]] = r["ms"] * 1e3
    return out, f"{doc['device']} ({path.name})"


def readme_table(result: dict, before: dict | None = None) -> str:
    """Markdown: the goal layout (bf16, channels_last) per block and stage, batch 64 and 1; with
    ``before`` (an earlier model file) its fused time beside each case's."""
    before_us = {e["key"]: e["fused"] for e in before["cases"]} if before else {}
    prof = result["profile"]
    lines = [f"Model of an {prof['name'].upper()} ({prof['sms']} SMs, {prof['l2_bytes'] // 2**20} MB L2, "
             f"{prof['hbm_bytes_per_s'] / 1e12:.2f} TB/s), bf16, channels_last: **a model, not a measurement** "
             f"(`python -m fusedattn.costmodel`, {result['date']}; constants and every case in "
             f"`{result['file']}`). HBM traffic in units of x's size; times in us.", "",
             "<details><summary>every case (bf16, channels_last); the JSON also holds fp32 and NCHW unless "
             "--quick</summary>", "",
             "| block | B x C x H x W | pass | fused kernels | fused HBM (x) | L2 re-reads (x) | eager HBM (x) "
             "| fused us | eager us | inductor us (est.) | eager / fused | measured fused / eager / compiled us |"
             + (" fused kernels, us before |" if before else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if before else "")]
    if before:
        lines[0] += (f" Before: `{before['file']}`, {before.get('note', 'an earlier model file')}.")
    measured, source = measured_us()
    if source:
        lines[0] += f" Measured: {source}."
    for e in result["cases"]:
        c = e["case"]
        if c["dtype"] != "bf16" or c["layout"] != "channels_last":
            continue
        f, eg, ind, x = e["fused"], e["eager"], e["inductor"], e["x_bytes"]
        got = measured.get((c["block"], c["B"], c["C"], c["H"], c["W"], c["dtype"], c["layout"], c["pass_"]), {})
        m = " / ".join(f"{got[p]:.1f}" if p in got else "-" for p in ("fused", "eager", "compiled")) if got else "-"
        lines.append(f"| {c['block']} | {c['B']}x{c['C']}x{c['H']}x{c['W']} | {c['pass_']} | {f['kernels']} | "
                     f"{(f['hbm_read'] + f['write']) / x:.2f} | {f['l2_read'] / x:.2f} | {eg['bytes'] / x:.2f} | "
                     f"{f['us']:.1f} | {eg['us']:.1f} | {ind['us']:.1f} | {eg['us'] / f['us']:.2f} | {m} |"
                     + (f" {before_us[e['key']]['kernels']}, {before_us[e['key']]['us']:.1f} |" if e["key"] in before_us
                        else (" - |" if before else "")))
    lines += ["", "</details>"]
    host = result.get("triton_path_host")
    if host:
        lines += ["", "Host time per call of the Triton path (CPU machine, recording driver: all of Python, binding "
                  "and specialization, plus 2.5 us per driver launch) against the eager reference's ATen ops at "
                  "negligible size plus the same 2.5 us per kernel (a model of a GPU's host side):", "",
                  "| case | eager us (kernels) | fused us (launches) | fused / eager |", "|---|---|---|---|"]
        lines += [f"| {h['key']} | {h['eager_us']:.1f} ({h['eager_kernels']}) | {h['fused_us']:.1f} "
                  f"({h['launches']}) | {h['fused_us'] / h['eager_us']:.2f} |" for h in host]
    host = result.get("cpu_route_host")
    if host:
        lines += ["", "Host time per call on this CPU (CPU tensors: the fused module's plain-PyTorch route against "
                  "the eager reference module, fp32, NCHW, median of interleaved rounds, one thread):", "",
                  "| case | eager us | fused us | fused / eager |", "|---|---|---|---|"]
        lines += [f"| {h['key']} | {h['eager_us']:.1f} | {h['fused_us']:.1f} | {h['ratio']:.2f} |" for h in host]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusedattn.costmodel", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(config.PROFILES), default="h100")
    parser.add_argument("--quick", action="store_true",
                        help="only bf16, channels_last (the goal layout) and no host times of the Triton path")
    parser.add_argument("--blocks", nargs="+", choices=sorted(cases_mod.BLOCKS), default=sorted(cases_mod.BLOCKS))
    parser.add_argument("--jobs", type=int, default=2, help="interpreter subprocesses counting traffic")
    parser.add_argument("--out", help="JSON path (default bench/results/model-<profile>-<date>.json)")
    parser.add_argument("--readme", action="store_true", help="rewrite the model table in README.md")
    parser.add_argument("--before", metavar="JSON", help="an earlier model file whose fused times the table shows "
                                                           "beside the new ones")
    parser.add_argument("--table-from", metavar="JSON",
                        help="count nothing: re-time an earlier model file with the current constants and render "
                             "its table (with the newest GPU measurements of bench/results beside it)")
    args = parser.parse_args(argv)
    before = retime(json.loads(pathlib.Path(args.before).read_text())) if args.before else None
    if args.table_from:
        path = pathlib.Path(args.table_from)
        result = retime(json.loads(path.read_text()))
        path.write_text(json.dumps(result, indent=1))
        return write_table(result, args.readme, before)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        parser.error("run without TRITON_INTERPRET (the model starts its own interpreter subprocesses)")
    profile = config.PROFILES[args.profile]
    kw = {"dtypes": ("bf16",), "layouts": ("channels_last",)} if args.quick else {}
    selected = all_cases(blocks=tuple(args.blocks), **kw)
    date = datetime.date.today().isoformat()
    out = pathlib.Path(args.out or f"bench/results/model-{profile.name}-{date}.json")
    result = {"profile": profile._asdict(), "date": date, "file": str(out), "constants": CONSTANTS,
              "torch": torch.__version__, "triton": __import__("triton").__version__,
              "cases": model_cases(selected, profile, with_host=not args.quick, jobs=args.jobs),
              "triton_path_host": triton_path_host_times(profile), "cpu_route_host": cpu_route_host_times()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return write_table(result, args.readme, before)


def retime(result: dict) -> dict:
    """The fused roofline of every case again from its stored bytes with the current CONSTANTS
    (after a calibration), without counting anything again: its Triton launches and the PyTorch
    kernels the fused path runs besides them (``torch_ops``, [name, bytes] each)."""
    profile = config.GPUProfile(**result["profile"])
    for e in result["cases"]:
        for row in e["launches"]:
            row["us"] = kernel_us(row["hbm_read"], row["l2_read"], row["loads_per_program"], profile,
                                  row.get("program_bytes", 0))
        e["fused"]["us"] = (sum(row["us"] for row in e["launches"])
                            + sum(kernel_us(nbytes, 0, 0, profile) for _, nbytes in e["fused"].get("torch_ops", [])))
    result["constants"] = dict(CONSTANTS)
    return result


def write_table(result: dict, readme: bool, before: dict | None = None) -> int:
    table = readme_table(result, before)
    print(table)
    if readme:
        path = pathlib.Path("README.md")
        text = path.read_text()
        start, end = "<!-- model-table:start -->", "<!-- model-table:end -->"
        if start in text:
            text = text[:text.index(start) + len(start)] + "\n" + table + "\n" + text[text.index(end):]
            path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
