"""SE's gate spread over (row tile x weight tile) programs (kernels/mlp_gate.py), forced on the
chunked pipeline, against the float64 reference: row tiles of 16 with a partial last one, wide
hidden vectors over several RD tiles, the max-pool ties, several chunks and H*W splits."""
import pytest
import torch

import fusedattn
from fusedattn.kernels import config
from fusedattn.reference import SEModule
from helpers import DTYPES, LAYOUTS, check_against_reference, make_x


@pytest.fixture(autouse=True)
def parallel_gate_pipeline(monkeypatch):
    monkeypatch.setattr(config, "one_launch", False)
    monkeypatch.setattr(config, "parallel_gate", True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parallel_gate_matches_reference(triton_backend, pipeline, dtype, layout, device):
    C = 40
    fused = fusedattn.SE(C, rd_ratio=0.5, add_maxpool=True).to(device, dtype)
    x = make_x((3, C, 5, 4), dtype, layout, device)
    check_against_reference(fused, SEModule(C, rd_ratio=0.5, add_maxpool=True), x, dtype, f"SE parallel gate {dtype}")


@pytest.mark.parametrize("shape, rd", [((19, 7, 2, 3), 3), ((2, 300, 3, 3), 300), ((1, 96, 1, 1), 40)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_parallel_gate_tiles(triton_backend, shape, rd, bias, device):
    """19 rows: a full row tile and a partial one; rd 300 and 40: several RD tiles, partial."""
    C = shape[1]
    kw = dict(rd_channels=rd, bias=bias)
    fused = fusedattn.SE(C, **kw).to(device)
    x = make_x(shape, torch.float32, "nchw", device)
    check_against_reference(fused, SEModule(C, **kw), x, torch.float32, f"SE parallel gate {shape} {kw}")


@pytest.mark.parametrize("add_maxpool", [False, True])
def test_parallel_gate_gradcheck_float64(triton_backend, add_maxpool, device):
    fused = fusedattn.SE(5, rd_channels=3, add_maxpool=add_maxpool).to(device, torch.float64)
    x = make_x((3, 5, 3, 2), torch.float64, "channels_last", device, requires_grad=True)
    # the full Jacobian with the max-pooled branch (the mean-only gate's superset), fast_mode without (CI time)
    assert torch.autograd.gradcheck(lambda t: fused(t), (x,), fast_mode=not add_maxpool)


def test_parallel_gate_is_deterministic(triton_backend, device):
    fused = fusedattn.SE(64, rd_ratio=0.25).to(device)
    x = make_x((5, 64, 4, 4), torch.float32, "nchw", device, requires_grad=True)
    y1 = fused(x)
    (g1,) = torch.autograd.grad(y1.square().sum(), x)
    y2 = fused(x)
    (g2,) = torch.autograd.grad(y2.square().sum(), x)
    assert torch.equal(y1, y2) and torch.equal(g1, g2)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("add_maxpool", [False, True])
def test_parallel_gate_many_rows(triton_backend, dtype, add_maxpool, device):
    """20 samples in one chunk: 16-row tiles through tl.dot (float64: FMA), a partial second
    row tile, RD = 24 over two RD tiles."""
    from fusedattn.kernels.mlp_gate import mlp_tiles

    C = 48
    assert mlp_tiles(20, C, 24, torch.float32).use_dot
    kw = dict(rd_channels=24, add_maxpool=add_maxpool)
    fused = fusedattn.SE(C, **kw).to(device, dtype)
    x = make_x((20, C, 3, 2), dtype, "channels_last", device)
    check_against_reference(fused, SEModule(C, **kw), x, dtype, f"SE parallel gate, 20 rows, {dtype}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("rows", [3, 20])
def test_parallel_gate_cbam(triton_backend, pipeline, dtype, rows, device):
    """CBAM's channel gate (mean and max branches through one MLP) on the same kernels: 3 rows
    (FMA) and 20 (16-row tiles, tl.dot but in float64)."""
    from fusedattn.reference import CbamModule

    C = 40
    fused = fusedattn.CBAM(C, rd_channels=16).to(device, dtype)
    x = make_x((rows, C, 4, 3), dtype, "channels_last", device)
    check_against_reference(fused, CbamModule(C, rd_channels=16), x, dtype, f"CBAM parallel gate {rows} rows {dtype}")


def test_parallel_gate_cbam_gradcheck_float64(triton_backend, device):
    fused = fusedattn.CBAM(4, rd_channels=3).to(device, torch.float64)
    x = make_x((2, 4, 2, 3), torch.float64, "nchw", device, requires_grad=True)
    # a random projection (fast_mode): test_cbam checks CBAM's full Jacobians (2 minutes of CI here)
    assert torch.autograd.gradcheck(lambda t: fused(t), (x,), fast_mode=True)


@pytest.fixture
def split_rd(monkeypatch):
    """Every gate-backward launch with more than one step along RD, and every hidden-layer launch
    with more than one step along C (steps of 16 channels here), splits the sum over programs."""
    from fusedattn.kernels import mlp_gate

    monkeypatch.setattr(mlp_gate, "MAX_STEPS", 1)
    monkeypatch.setattr(mlp_gate, "MAX_HIDDEN_STEPS", 1)
    tiles = mlp_gate.mlp_tiles
    monkeypatch.setattr(mlp_gate, "mlp_tiles",
                        lambda *a: tiles(*a)._replace(hidden=(tiles(*a).hidden[0], min(tiles(*a).hidden[1], 16))))


def _make(block, C, rd, dtype, device):
    from fusedattn.reference import CbamModule, EffectiveSEModule

    if block == "cbam":
        return fusedattn.CBAM(C, rd_channels=rd).to(device, dtype), CbamModule(C, rd_channels=rd)
    if block == "ese":   # the one-layer gate: the hidden kernel writes the gate
        return fusedattn.EffectiveSE(C).to(device, dtype), EffectiveSEModule(C)
    kw = dict(rd_channels=rd, add_maxpool=block == "se_max")
    return fusedattn.SE(C, **kw).to(device, dtype), SEModule(C, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("block", ["se", "se_max", "cbam", "ese"])
@pytest.mark.parametrize("rows", [3, 20])
def test_parallel_gate_backward_split_over_rd(triton_backend, split_rd, block, rows, dtype, device):
    """The sums over RD of the gate backward (40 hidden units: 3 steps of 16; ESE's 24) and over C of
    the hidden layer, forward and backward (24 channels: 2 steps), split over programs, the shares
    added by the tile's last program: against the reference, and bitwise run to run."""
    fused, ref = _make(block, 24, 40, dtype, device)
    x = make_x((rows, 24, 3, 4), dtype, "channels_last", device)
    check_against_reference(fused, ref, x, dtype, f"{block} gate backward split over RD, {rows} rows {dtype}")
    xg = x.detach().requires_grad_()
    grads = []
    for _ in range(2):
        (g,) = torch.autograd.grad(fused(xg).square().sum(), xg)
        grads.append(g)
    assert torch.equal(*grads)
    from fusedattn.kernels.arrival import _COUNTERS
    assert all(not c.any() for c in _COUNTERS.values())


@pytest.mark.parametrize("block", ["se_max", "cbam"])
def test_parallel_gate_backward_split_gradcheck_float64(triton_backend, split_rd, block, device, monkeypatch):
    """gradcheck through the split sums: the FMA path's RD step cut to 4 (9 hidden units: 3 splits),
    its C step to 4 (5 channels: 2 splits)."""
    from fusedattn.kernels import mlp_gate

    tiles = mlp_gate.mlp_tiles
    monkeypatch.setattr(mlp_gate, "mlp_tiles",
                        lambda *a: tiles(*a)._replace(gate=(4, tiles(*a).gate[1]), hidden=(tiles(*a).hidden[0], 4)))
    fused, _ = _make(block, 5, 9, torch.float64, device)
    x = make_x((2, 5, 3, 2), torch.float64, "nchw", device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fused(t), (x,), fast_mode=True)
