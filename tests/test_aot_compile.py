"""Every kernel variant the launchers use compiles for an H100 (sm_90), checked on any machine.

The rest of the suite runs the kernels under Triton's interpreter, which accepts code that the
compiler rejects; this runs tests/aot_compile.py in a subprocess without TRITON_INTERPRET
(the JIT's own launch path with a recording driver: compiling to a cubin needs no GPU, only the
ptxas that ships with triton), and fails when a streaming kernel of the benchmarked shapes does
not load and store 128 bits at a time (its list of known exceptions aside) or its loads and
stores of x-sized tiles carry no L2 eviction hint.
"""
import os
import subprocess
import sys
from pathlib import Path


def test_all_kernel_variants_compile_for_sm90():
    """Both shape groups at once (two processes: the compiles are CPU-bound)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    script = Path(__file__).with_name("aot_compile.py")
    procs = [subprocess.Popen([sys.executable, str(script), "--arch", "90", "--shapes", group], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for group in ("small", "bench")]
    for proc in procs:
        report = proc.communicate(timeout=3000)[0]   # 1200 s ran out on a slow day (2026-11-26)
        assert proc.returncode == 0, report[-6000:]
        assert " 0 failed" in report and "compiled" in report and " 0 streaming variants without" in report \
            and " 0 streaming variants without eviction hints" in report \
            and " 0 float64 variants with fp32 scalar" in report, report[-3000:]
