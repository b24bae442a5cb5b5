"""Fused SE (Triton path and plain-PyTorch path) against the float64 reference."""
import pytest
import torch

import fusedattn
from fusedattn.reference import LinearSE, SEModule
from helpers import DTYPES, LAYOUTS, ODD_SHAPES, SAME64, check_against_reference, make_x


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_se_matches_reference(backend, pipeline, dtype, layout, device):
    C = 48
    fused = fusedattn.SE(C, rd_ratio=0.25).to(device, dtype)
    x = make_x((3, C, 6, 5), dtype, layout, device)
    y, dx = check_against_reference(fused, SEModule(C, rd_ratio=0.25), x, dtype, f"SE {dtype} {layout}")
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("shape", ODD_SHAPES, ids=str)
@pytest.mark.parametrize("add_maxpool", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_se_odd_shapes_and_options(backend, pipeline, shape, add_maxpool, bias, device):
    C = shape[1]
    kw = dict(rd_channels=max(C // 4, 1), add_maxpool=add_maxpool, bias=bias)
    fused = fusedattn.SE(C, **kw).to(device)
    x = make_x(shape, torch.float32, "nchw", device)
    check_against_reference(fused, SEModule(C, **kw), x, torch.float32, f"SE {shape} {kw}")


def test_se_maxpool_ties_split_like_amax(backend, device):
    """Tied maxima share the max-pool gradient evenly, as torch.amax does."""
    C = 6
    fused = fusedattn.SE(C, rd_channels=3, add_maxpool=True).to(device, torch.float64)
    x = torch.randint(-2, 3, (2, C, 4, 3), device=device).double()  # many ties per channel
    check_against_reference(fused, SEModule(C, rd_channels=3, add_maxpool=True), x,
                            torch.float64, "SE ties")


def test_se_large_hidden_and_channels(backend, pipeline, device):
    """rd_ratio=1: the hidden vector is as wide as C and spans several gate tiles."""
    C = 300
    fused = fusedattn.SE(C, rd_ratio=1.0).to(device)
    x = make_x((2, C, 3, 3), torch.float32, "channels_last", device)
    check_against_reference(fused, SEModule(C, rd_ratio=1.0), x, torch.float32, "SE wide")


def test_linear_se_layout_matches(backend, device):
    src = LinearSE(32, reduction=8).to(device).double()
    fused = fusedattn.SE.from_module(src)
    x = make_x((2, 32, 4, 4), torch.float64, "nchw", device)
    assert torch.allclose(fused(x), src(x), rtol=SAME64, atol=SAME64)


@pytest.mark.parametrize("add_maxpool", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_se_gradcheck_float64(triton_backend, pipeline, layout, add_maxpool, device):
    """torch.autograd.gradcheck through the Triton kernels in float64 (the one-launch plan, and the
    pipeline whose pool launch computes the gate: kernels/se_pool_gate.py): the full Jacobian for
    NCHW, a random projection of it (fast_mode) for channels_last (CI time)."""
    C, RD = 5, 3
    x = make_x((2, C, 3, 2), torch.float64, layout, device, requires_grad=True)
    w1 = torch.randn(RD, C, 1, 1, dtype=torch.float64, device=device, requires_grad=True)
    b1 = torch.randn(RD, dtype=torch.float64, device=device, requires_grad=True)
    w2 = torch.randn(C, RD, 1, 1, dtype=torch.float64, device=device, requires_grad=True)
    b2 = torch.randn(C, dtype=torch.float64, device=device, requires_grad=True)
    fn = lambda *a: fusedattn.se(*a, add_maxpool=add_maxpool)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w1, b1, w2, b2), eps=1e-6, atol=1e-7, rtol=1e-5,
                                    fast_mode=layout == "channels_last")


def test_se_non_contiguous_input(backend, device):
    """Slices and crops (non-contiguous views) give the reference's results."""
    C = 16
    fused = fusedattn.SE(C, rd_channels=4).to(device)
    ref = SEModule(C, rd_channels=4).to(device)
    ref.load_state_dict(fused.state_dict())
    base = torch.randn(4, 2 * C, 9, 11, device=device)
    for x in (base[:, ::2], base[1:3, :C, 1:8, 2:9], base.transpose(2, 3)[:, :C]):
        assert not x.is_contiguous()
        torch.testing.assert_close(fused(x), ref(x), rtol=1e-5, atol=1e-6)
