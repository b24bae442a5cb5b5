"""Every kernel variant the launchers use compiles for an H100 (sm_90), checked on any machine.

The rest of the suite runs the kernels under Triton's interpreter, which accepts code that the
compiler rejects; this runs tests/aot_compile.py in a subprocess without TRITON_INTERPRET
(triton.compile to a cubin needs no GPU, only the ptxas that ships with triton).
"""
import os
import subprocess
import sys
from pathlib import Path


def test_all_kernel_variants_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    script = Path(__file__).with_name("aot_compile.py")
    proc = subprocess.run([sys.executable, str(script), "--arch", "90"], env=env, capture_output=True,
                          text=True, timeout=1200)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report[-6000:]
    assert " 0 failed" in report and "compiled" in report, report[-3000:]
