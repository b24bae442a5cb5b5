"""The cost model's host-time cases (SE, ECA, CBAM at 1x64x4x4 and 8x256x14x14, fp32, NCHW) with
Triton launches through the JIT and through kernels/launch.py's lean path, interleaved with the
eager reference in one process (host timings on a shared CPU drift between runs; interleaving
keeps the comparison fair). Fused: the Triton path on the recording driver plus the model's
per-launch driver constant; eager: its ATen ops at negligible size plus the same per kernel.

    python bench/host_fast_launch.py [--out JSON]      # TRITON_INTERPRET unset
"""
import argparse
import json

from fusedattn.costmodel.__main__ import CONSTANTS, HOST_CASE_ROUNDS, host_cases, interleaved_us
from fusedattn.costmodel.cases import make_inputs, make_pair, runner
from fusedattn.costmodel.dryrun import dry_run
from fusedattn.kernels import config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    config.profile = config.PROFILES["h100"]
    launch_us = CONSTANTS["driver_launch_us"]
    rows = []
    for case, n, kernels in host_cases():
        ref, fused = make_pair(case)
        with dry_run(record=False):
            fast = runner(fused, make_inputs(case), case.pass_)
            eager = runner(ref, make_inputs(case, (min(case.B, 2), case.C, 1, 1)), case.pass_)

            def jit():
                config.fast_launch = False
                try:
                    fast()
                finally:
                    config.fast_launch = True
            fast(), fast(), jit()
            t = interleaved_us({"eager": eager, "jit": jit, "fast": fast}, calls=3, rounds=HOST_CASE_ROUNDS)
        row = {"key": case.key, "launches": n, "eager_kernels": kernels,
               "eager_us": t["eager"] + kernels * launch_us, "jit_us": t["jit"] + n * launch_us,
               "fused_us": t["fast"] + n * launch_us}
        rows.append(row)
        print(f"{case.key:36s} eager {row['eager_us']:7.1f} ({kernels:2d})  fused via JIT {row['jit_us']:7.1f}"
              f"  fused fast {row['fused_us']:7.1f} ({n:2d})  fast / eager {row['fused_us'] / row['eager_us']:.2f}"
              f"  JIT / eager {row['jit_us'] / row['eager_us']:.2f}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
