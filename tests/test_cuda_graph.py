"""The launchers are CUDA-graph safe (no host syncs, no per-call device queries): a fused block
captured in a CUDA graph replays to the result of a plain call, forward and backward, on new
data copied into the static inputs. Needs a GPU (skipped without one)."""
import pytest
import torch

import fusedattn
from fusedattn.benchmark import graphed
from fusedattn.reference import CbamModule, EcaModule, SEModule

from fusedattn.kernels import channel_gate, config
from helpers import assert_close

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("make", [lambda: fusedattn.SE.from_module(SEModule(64)),
                                  lambda: fusedattn.ECA.from_module(EcaModule(64)),
                                  lambda: fusedattn.CBAM.from_module(CbamModule(64)).eval()])
def test_graph_replays_to_the_plain_result(make, layout):
    fused = make().cuda()
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(4, 64, 14, 14, device="cuda").to(memory_format=fmt).requires_grad_()
    replay = graphed(fused, [x])
    for _ in range(2):  # new data through the same static input
        new = torch.randn_like(x)
        with torch.no_grad():
            x.copy_(new)
        dy = torch.randn_like(x)
        y = replay(x)
        (dx,) = torch.autograd.grad(y, x, dy)
        x_ref = new.detach().clone().requires_grad_()
        y_ref = fused(x_ref)
        (dx_ref,) = torch.autograd.grad(y_ref, x_ref, dy)
        assert_close(y, y_ref, torch.float32, "y")
        assert_close(dx, dx_ref, torch.float32, "dx")


def test_l2_chunks_in_a_capture_only(monkeypatch):
    """An eager call pools the whole batch in one launch (one chunk: host time per launch outweighs
    the HBM read a chunk saves); a CUDA graph capture walks it in L2 chunks (config.l2_chunks)."""
    pools = []
    pool = channel_gate.channel_pool
    monkeypatch.setattr(channel_gate, "channel_pool", lambda *a, **k: (pools.append(a[3:5]), pool(*a, **k))[1])
    monkeypatch.setattr(config, "one_launch", False)
    fused = fusedattn.SE.from_module(SEModule(256)).cuda()
    x = torch.randn(64, 256, 56, 56, device="cuda")   # 205 MB: more than half of any L2
    with torch.no_grad():
        y = fused(x)
        assert pools == [(0, 64)]
        monkeypatch.setattr(config, "l2_chunks", True)   # warm up the chunked plan's kernels outside the capture
        fused(x)
        chunked = len(pools) - 1
        monkeypatch.setattr(config, "l2_chunks", None)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y_graph = fused(x)
        graph.replay()
    torch.cuda.synchronize()
    assert chunked > 1 and len(pools) == 1 + 2 * chunked
    assert_close(y_graph, y, torch.float32, "y")
