"""SE's pool launch that computes the gate in the last program of each sample (kernels/arrival.py,
kernels/se_pool_gate.py): counters left at zero, the gate bitwise the separate gate kernel's and
the same run to run, whichever program arrives last. SK's gate (kernels/sk_gate.py) likewise: the
batch statistics by the last fc_reduce program, du by the last channel-tile program of a sample."""
import pytest
import torch

from fusedattn.kernels import config
from fusedattn.kernels.activations import ACTIVATIONS
from fusedattn.kernels.arrival import _COUNTERS, arrival_counters
from fusedattn.kernels.channel_pool import channel_pool, new_partials, plan_pool
from fusedattn.kernels.layout import acc_dtype, channel_view
from fusedattn.kernels.se import se_backward, se_forward
from fusedattn.kernels.se_gate import gate_tiles, se_gate_backward_kernel, se_gate_forward_kernel
from fusedattn.kernels.se_pool_gate import se_pool_gate, se_pool_gate_backward
from helpers import DTYPES, make_x

pytestmark = pytest.mark.usefixtures("triton_backend")

#: several programs per sample: channel blocks (NCHW), H*W splits (channels_last)
CASES = [((3, 70, 7, 5), "nchw", False), ((2, 40, 9, 7), "channels_last", True), ((1, 130, 6, 11), "nchw", True)]


def _weights(C, RD, dtype, device):
    wt = torch.float64 if dtype == torch.float64 else torch.float32
    return [torch.randn(*s, dtype=wt, device=device) * 0.4 for s in ((RD, C), (RD,), (C, RD), (C,))]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,layout,add_maxpool", CASES, ids=str)
def test_pool_gate_is_the_gate_kernels(dtype, shape, layout, add_maxpool, monkeypatch):
    """Pool + gate in one launch, several programs per sample (channel blocks, H*W splits: the last
    to arrive is not the first): pooled, pool_max, hidden and gate bitwise those of the pool launch
    followed by the separate gate kernel, and every counter back at zero."""
    monkeypatch.setattr(config, "target_programs", 1 << 12)
    monkeypatch.setattr(config, "poison_outputs", True)
    B, C, H, W = shape
    RD = max(C // 4, 1)
    x = make_x(shape, dtype, layout, "cpu")
    w1, b1, w2, b2 = _weights(C, RD, dtype, "cpu")
    xv = channel_view(x)
    plan = plan_pool(xv, B, C, H * W)
    assert plan.n_splits * plan.n_cblocks > 1
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    outs = {}
    for fused in (True, False):
        parts = new_partials(plan, B, C, x, add_maxpool)
        vec = [config.new_buffer(s, acc, "cpu") for s in ((B, C), (B, C) if add_maxpool else (0,), (B, RD), (B, C))]
        pooled, pool_max, hidden, gate = vec
        relu, sigmoid = ACTIVATIONS["relu"], ACTIVATIONS["sigmoid"]
        if fused:
            counters = arrival_counters(x.device, B)
            se_pool_gate(xv, plan, parts, counters, 0, B, w1, b1, w2, b2, pooled, pool_max, hidden, gate,
                         gate_tiles(C, RD), relu, sigmoid)
            assert not counters.any()
        else:
            channel_pool(xv, plan, parts, 0, B)
            block_c, block_rd = gate_tiles(C, RD)
            se_gate_forward_kernel[(B,)](parts.sums, parts.maxs if add_maxpool else parts.sums, plan.n_splits,
                                         B, C, RD, H * W, w1, b1, w2, b2, pooled,
                                         pool_max if add_maxpool else pooled, hidden, gate, 0,
                                         HAS_BIAS=True, WITH_MAX=add_maxpool, MLP_ACT=relu, GATE=sigmoid,
                                         BLOCK_C=block_c, BLOCK_RD=block_rd, ACC=acc_dtype(dtype))
        outs[fused] = vec
    for a, b in zip(outs[True], outs[False]):
        assert not a.isnan().any()
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,layout,add_maxpool", CASES, ids=str)
def test_pool_gate_backward_is_the_gate_kernels(dtype, shape, layout, add_maxpool, monkeypatch):
    """Backward: sum_hw(dy * x) partials (and ties with the max, on an input with many ties) and
    the gate backward in one launch: dz, dh, mean_coef, max_coef bitwise those of the pool launch
    followed by se_gate_backward_kernel; counters back at zero."""
    monkeypatch.setattr(config, "target_programs", 1 << 12)
    monkeypatch.setattr(config, "poison_outputs", True)
    B, C, H, W = shape
    RD = max(C // 4, 1)
    x = torch.randint(-2, 3, shape).to(dtype) if add_maxpool else make_x(shape, dtype, "nchw", "cpu")
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    dy = make_x(shape, dtype, layout, "cpu")
    w1, _, w2, _ = _weights(C, RD, dtype, "cpu")
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    hidden, gate = torch.randn(B, RD, dtype=acc), torch.rand(B, C, dtype=acc)
    pool_max = x.to(acc).amax((2, 3)) if add_maxpool else None
    xv, dyv = channel_view(x), channel_view(dy)
    plan = plan_pool(xv, B, C, H * W)
    assert plan.n_splits * plan.n_cblocks > 1
    relu, sigmoid = ACTIVATIONS["relu"], ACTIVATIONS["sigmoid"]
    outs = {}
    for fused in (True, False):
        parts = new_partials(plan, B, C, x, with_max=False, with_counts=add_maxpool)
        vec = [config.new_buffer(s, acc, "cpu") for s in ((B, C), (B, RD), (B, C), (B, C) if add_maxpool else (0,))]
        dz, dh, mean_coef, max_coef = vec
        if fused:
            counters = arrival_counters(x.device, B)
            se_pool_gate_backward(xv, dyv, pool_max, plan, parts, counters, 0, B, w1, w2, hidden, gate, dz, dh,
                                  mean_coef, max_coef if add_maxpool else None, gate_tiles(C, RD), relu, sigmoid)
            assert not counters.any()
        else:
            channel_pool(xv, plan, parts, 0, B, dy=dyv, ref_max=pool_max)
            block_c, block_rd = gate_tiles(C, RD)
            se_gate_backward_kernel[(B,)](parts.sums, parts.counts if add_maxpool else parts.sums, plan.n_splits,
                                          B, C, RD, H * W, w1, w2, hidden, gate, dz, dh, mean_coef,
                                          max_coef if add_maxpool else mean_coef, 0,
                                          WITH_MAX=add_maxpool, MLP_ACT=relu, GATE=sigmoid,
                                          BLOCK_C=block_c, BLOCK_RD=block_rd, ACC=acc_dtype(dtype))
        outs[fused] = vec
    for a, b in zip(outs[True], outs[False]):
        assert not a.isnan().any()
        assert torch.equal(a, b)


def test_counters_zero_and_results_repeat(monkeypatch):
    """SE's pipeline forward and backward (several chunks, split H*W) twice: bitwise the same
    results, and every counter of every stream key at zero afterwards."""
    monkeypatch.setattr(config, "one_launch", False)
    monkeypatch.setattr(config, "chunk_bytes", 1)
    monkeypatch.setattr(config, "target_programs", 1 << 12)
    x = make_x((4, 24, 6, 5), torch.float32, "channels_last", "cpu")
    w1, b1, w2, b2 = _weights(24, 6, torch.float32, "cpu")
    monkeypatch.setattr(config, "one_launch_backward", False)
    dy = make_x(x.shape, torch.float32, "channels_last", "cpu")
    runs = []
    for _ in range(2):
        y, pooled, pool_max, hidden, gate = forward = se_forward(x, w1, b1, w2, b2, True)
        runs.append([*forward, *se_backward(dy, x, w1, w2, True, pooled, pool_max, hidden, gate)[:5]])
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    assert _COUNTERS and all(not c.any() for c in _COUNTERS.values())


def test_counters_grow_with_the_batch():
    small = arrival_counters(torch.device("cpu"), 3)
    assert small.dtype == torch.int32 and small.numel() >= 3 and not small.any()
    big = arrival_counters(torch.device("cpu"), small.numel() + 1)
    assert big.numel() > small.numel() and not big.any()
    assert arrival_counters(torch.device("cpu"), 2) is big


@pytest.mark.parametrize("training", [True, False])
def test_sk_gate_last_programs(training):
    """SK forward and backward (3 channel tiles per sample, 5 samples) twice in float64: bitwise
    the same, counters at zero, the batch statistics those of z, du summed over every tile."""
    from fusedattn.kernels.sk import select_block_c, sk_backward, sk_forward

    B, C, A, P = 5, 40, 64, 2
    assert -(-C // select_block_c(C, A)) == 3
    xs = [make_x((B, C, 4, 3), torch.float64, "nchw", "cpu") for _ in range(P)]
    wr, ws = torch.randn(A, C, dtype=torch.float64) * 0.3, torch.randn(P * C, A, dtype=torch.float64) * 0.3
    bn = [torch.rand(A, dtype=torch.float64) + 0.5 for _ in range(4)]   # gamma, beta, running mean, var
    dy = make_x(xs[0].shape, torch.float64, "nchw", "cpu")
    runs = []
    for _ in range(2):
        y, s, z, u, att, mean, var = out = sk_forward(xs, wr, ws, *bn, training, 1e-5)
        runs.append([*out, *sk_backward(dy, xs, wr, ws, bn[0], 1e-5, training, s, z, u, att, mean, var)[0]])
    for a, b in zip(*runs):
        assert not a.isnan().any() and torch.equal(a, b)
    if training:
        torch.testing.assert_close(mean, z.mean(0), rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(var, z.var(0, unbiased=False), rtol=1e-13, atol=1e-13)
    else:
        assert torch.equal(mean, bn[2]) and torch.equal(var, bn[3])
    assert all(not c.any() for c in _COUNTERS.values())
