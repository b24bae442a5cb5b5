"""bench/host_profile.py (the GPU round's host-time breakdown) runs, here on the CPU route."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import host_profile  # noqa: E402


def test_host_profile_prints_every_row(capsys):
    host_profile.main(["--blocks", "se,eca", "--calls", "2", "--top", "3", "--shape", "2,16,4,4"])
    out = capsys.readouterr().out
    for block in ("se", "eca"):
        for provider in ("eager", "fused"):
            for pass_ in ("forward", "fwd+bwd", "bwd alone"):
                assert f"{block:8s}{provider:10s}{pass_:11s}" in out, (block, provider, pass_, out[-2000:])
    assert "top host ops" in out
    from fusedattn.backend import interpreter_enabled
    assert ("one Triton launch, host us" in out) == interpreter_enabled()
