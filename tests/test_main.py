"""`python -m fusedattn` (the README's main job) runs and reports every block."""
import os
import subprocess
import sys

from fusedattn.benchmark import BLOCKS


def test_python_m_fusedattn_reports_every_block():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # on a GPU: a small timing case without torch.compile (the full table is the GPU session's job)
    proc = subprocess.run([sys.executable, "-m", "fusedattn", "--shape", "8,64,28,28", "--no-compile"], env=env,
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "torch" in out and "triton" in out and "Timings, median ms" in out
    for block in BLOCKS:
        assert out.count(f"  {block} ") >= 2, (block, out[-3000:])  # error lines and timing rows
