"""kernels/launch.py: the lean launch path launches exactly what Triton's JIT launches.

The comparison needs real (compiled) kernels, so it runs tests/fast_launch_check.py in a subprocess
without TRITON_INTERPRET, on the cost model's recording driver (no GPU: the variants compile for
sm_90 with the ptxas that ships with triton)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusedattn.kernels import config
from fusedattn.kernels.channel_pool import channel_pool_kernel
from fusedattn.kernels.launch import fast


def test_fast_path_launches_what_the_jit_launches():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("fast_launch_check.py"))], env=env,
                          capture_output=True, text=True, timeout=1800)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0 and " 0 failed" in report, report[-6000:]
    assert "28 cases" in report and "launches compared" in report, report[-3000:]


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="the interpreter's kernels")
def test_interpreted_and_switched_off_kernels_launch_as_they_are(monkeypatch):
    assert fast(channel_pool_kernel) is channel_pool_kernel   # an InterpretedFunction: nothing to skip
    monkeypatch.setattr(config, "fast_launch", False)
    assert fast(channel_pool_kernel) is channel_pool_kernel


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a GPU launch")
@pytest.mark.parametrize("block", ["se", "eca", "cbam", "simam"])
def test_fast_and_jit_launches_agree_on_a_gpu(block, monkeypatch):
    """The same calls through the lean path and through the JIT give bitwise the same outputs and
    gradients on a GPU (the real launcher, not the recording driver)."""
    from fusedattn.costmodel.cases import Case, make_inputs, make_pair, runner

    case = Case(block, 2, 64, 9, 9, "bf16", "channels_last", "fwd+bwd")
    _, fused = make_pair(case, device="cuda")
    xs = make_inputs(case, device="cuda")
    run = runner(fused, xs, case.pass_)
    results = {}
    for on in (False, True, True):   # the second fast call launches without the JIT
        monkeypatch.setattr(config, "fast_launch", on)
        results.setdefault(on, []).append([g.clone() for g in run() if g is not None])
    for a, b in zip(results[False][0], results[True][1]):
        assert torch.equal(a, b)
