"""bench/chunk_sweep.py (the GPU round's L2 chunk sweep) runs its three shares through the Triton
path: under the interpreter here, with the chunks forced on and an L2 of 8 samples."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import chunk_sweep  # noqa: E402

from fusedattn import backend  # noqa: E402
from fusedattn.kernels import config  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU sweep is a stage of bench/gpu_session.sh")
@pytest.mark.parametrize("block", ["se", "cbam"])
def test_sweep_changes_the_chunks_not_the_result(block, monkeypatch):
    monkeypatch.setattr(config, "poison_outputs", True)   # an unwritten chunk would be NaN
    monkeypatch.setattr(config, "one_launch", False)       # SE's chunked pipeline at this small shape
    seen = []
    plan = config.planned_chunk_bytes

    def planned(p, capturing=False):
        seen.append((config.chunk_fraction, plan(p, capturing)))
        return seen[-1][1]

    monkeypatch.setattr(config, "planned_chunk_bytes", planned)
    with backend.use_backend("triton"):
        result = chunk_sweep.sweep([block], [(4, 16, 5, 6)], torch.float32, torch.device("cpu"))
    rows = result["rows"]
    assert [(r["pass_"], r["fraction"]) for r in rows] == [(p, f) for p in chunk_sweep.PASSES
                                                           for f in chunk_sweep.FRACTIONS]
    assert [r["samples_per_chunk"] for r in rows] == [1, 2, 4] * 2
    assert [r["chunks"] for r in rows] == [4, 2, 1] * 2
    # the launchers planned with each share in turn (so each row ran its own chunk plan)
    per_sample = 16 * 5 * 6 * 4
    assert {(f, b // per_sample) for f, b in seen} == {(1 / 8, 1), (1 / 4, 2), (1 / 2, 4)}
    assert all(r["same_result"] and r["ms"] > 0 for r in rows), rows
    assert result["best_fraction"] in chunk_sweep.FRACTIONS
    assert set(result["fastest"].values()) <= set(chunk_sweep.FRACTIONS)
    assert config.chunk_fraction is None and config.l2_chunks is None   # restored
    assert "geometric mean" in chunk_sweep.table(result)
