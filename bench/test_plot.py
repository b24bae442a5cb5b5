"""bench/plot.py renders a result file (here: one written by this run's tiny CPU bench cases)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def test_plot_renders_a_result_file(tmp_path):
    pytest.importorskip("matplotlib")
    env_out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(HERE / "test_bench_models.py"), str(HERE / "test_bench_blocks.py"),
                           # model rows and forward block rows, eager and fused (torch.compile on CPU is most of a full
                           # sweep's time, and the rendering does not depend on the provider)
                           "-k", "(test_model and inference) or (2x64x8x8 and channels_last and forward and (eager or fused))",
                           "--benchmark-disable"],
                          env={**os.environ, "FUSEDATTN_BENCH_OUT": str(env_out)},
                          capture_output=True, text=True, cwd=HERE.parent, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(env_out.read_text())
    assert any(r.get("kind") == "model" for r in doc["results"])
    png = tmp_path / "plot.png"
    proc = subprocess.run([sys.executable, str(HERE / "plot.py"), str(env_out), "-o", str(png), "--dtype", "float32"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
