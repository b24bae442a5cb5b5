"""`python -m fusedattn` (the README's main job) runs and reports every block."""
import os
import subprocess
import sys

import pytest

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


@pytest.mark.parametrize("bad", ["abc", "1,64,4", "0,64,4,4", "2,48,4,4", "2,64,4,x"])
def test_python_m_fusedattn_rejects_a_bad_shape_at_once(bad, capsys):
    """argparse's usage message and exit status 2 before any check runs (was: a traceback after
    about 20 s of checks)."""
    from fusedattn.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--shape", bad])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:") and "--shape" in err and repr(bad) in err
