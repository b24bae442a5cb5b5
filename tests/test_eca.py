"""Fused ECA / CECA (Triton path and plain-PyTorch path) against the float64 reference."""
import pytest
import torch
from torch import nn

import fusedattn
from fusedattn.reference import CecaModule, EcaModule
from helpers import DTYPES, LAYOUTS, ODD_SHAPES, check_against_reference, make_x


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("circular", [False, True])
def test_eca_matches_reference(backend, pipeline, dtype, layout, circular, device):
    C = 40
    fused_cls, ref_cls = (fusedattn.CECA, CecaModule) if circular else (fusedattn.ECA, EcaModule)
    fused = fused_cls(kernel_size=5).to(device, dtype)
    x = make_x((3, C, 5, 6), dtype, layout, device)
    y, dx = check_against_reference(fused, ref_cls(kernel_size=5), x, dtype, f"ECA {dtype} {layout}")
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("shape", ODD_SHAPES, ids=str)
@pytest.mark.parametrize("k", [3, 7])
def test_eca_odd_shapes(backend, pipeline, shape, k, device):
    x = make_x(shape, torch.float32, "channels_last", device)
    check_against_reference(fusedattn.ECA(kernel_size=k).to(device), EcaModule(kernel_size=k), x,
                            torch.float32, f"ECA {shape} k={k}")


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 9, 1, 1), (2, 260, 2, 2)], ids=str)
@pytest.mark.parametrize("bias", [False, True])
def test_ceca_wraps_channels(backend, pipeline, shape, bias, device):
    """Circular padding, with C no larger than the kernel too, and timm's conv bias."""
    act = nn.ReLU if bias else None
    x = make_x(shape, torch.float32, "nchw", device)
    check_against_reference(fusedattn.CECA(kernel_size=7, act_layer=act).to(device),
                            CecaModule(kernel_size=7, act_layer=act), x, torch.float32, f"CECA {shape}")


@pytest.mark.parametrize("channels,k", [(64, 3), (256, 5), (2048, 7)])
def test_adaptive_kernel_size(channels, k):
    assert fusedattn.ECA(channels).conv.kernel_size == (k,)
    assert EcaModule(channels).conv.kernel_size == (k,)


@pytest.mark.parametrize("circular", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_eca_gradcheck_float64(triton_backend, circular, layout, device):
    x = make_x((2, 6, 3, 2), torch.float64, layout, device, requires_grad=True)
    w = torch.randn(1, 1, 5, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(1, dtype=torch.float64, device=device, requires_grad=True)
    fn = lambda x, w, b: fusedattn.eca(x, w, b, circular=circular)  # noqa: E731
    # the full Jacobian for NCHW, a random projection (fast_mode) for channels_last (CI time)
    assert torch.autograd.gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=layout == "channels_last")


def test_eca_non_contiguous_input(backend, device):
    fused = fusedattn.ECA(kernel_size=3).to(device)
    ref = EcaModule(kernel_size=3).to(device)
    ref.load_state_dict(fused.state_dict())
    base = torch.randn(3, 20, 8, 9, device=device)
    for x in (base[:, 1::2], base[:, :, 1:7, ::2], base.permute(0, 1, 3, 2)):
        assert not x.is_contiguous()
        torch.testing.assert_close(fused(x), ref(x), rtol=1e-5, atol=1e-6)


@pytest.fixture
def weight_grad_tiles(monkeypatch):
    """The pipeline's backward (the one-launch backward writes B = 1's weight gradients itself), its
    weight gradient over many small tiles (2 samples x 8 channels: 5 samples x 40 channels are 15
    tiles) whose rows the last program adds 4 at a time."""
    from fusedattn.kernels import config, eca_gate

    monkeypatch.setattr(config, "one_launch", False)
    monkeypatch.setattr(eca_gate, "WEIGHT_GRAD_TILE", 16)
    monkeypatch.setattr(eca_gate, "WEIGHT_GRAD_ROWS", 4)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("circular, bias", [(False, False), (True, True)], ids=["eca", "ceca-bias"])
def test_eca_weight_grad_over_tiles(triton_backend, weight_grad_tiles, dtype, circular, bias, device):
    """dW (and the bias gradient) summed over (sample, channel) tiles: against the float64 reference
    (weights included), and bitwise the same run to run, the arrival counter back at zero."""
    from fusedattn.kernels.arrival import _COUNTERS

    kw = dict(kernel_size=5, act_layer=nn.ReLU) if bias else dict(kernel_size=5)   # CECA's conv bias
    fused_cls, ref_cls = (fusedattn.CECA, CecaModule) if circular else (fusedattn.ECA, EcaModule)
    fused = fused_cls(**kw).to(device, dtype)
    x = make_x((5, 40, 3, 2), dtype, "channels_last", device)
    check_against_reference(fused, ref_cls(**kw), x, dtype, f"ECA weight grad {dtype}")
    grads = []
    for _ in range(2):
        fused.zero_grad()
        fused(x).square().sum().backward()
        grads.append([p.grad.clone() for p in fused.parameters()])
    assert len(grads[0]) == 1 + bias
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    assert all(not c.any() for c in _COUNTERS.values())


def test_eca_weight_grad_over_tiles_gradcheck_float64(triton_backend, weight_grad_tiles, device):
    x = make_x((5, 20, 2, 1), torch.float64, "nchw", device, requires_grad=True)
    w = torch.randn(1, 1, 3, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(1, dtype=torch.float64, device=device, requires_grad=True)
    fn = lambda x, w, b: fusedattn.eca(x, w, b, circular=True)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)
