"""The one-launch plan of SE / ECA / CECA (kernels/one_launch.py) against the float64 reference
and against the chunked pipeline it replaces, on shapes that stress its tiles: ECA's halo across
many channel tiles (zero and circular padding), SE's channel loop and wide hidden vectors."""
import pytest
import torch

import fusedattn
from fusedattn.kernels import config, one_launch
from fusedattn.kernels.layout import channel_view
from fusedattn.kernels.one_launch import eca_tile_c, se_fits_one_launch
from fusedattn.reference import CecaModule, EcaModule, SEModule
from helpers import DTYPES, LAYOUTS, SAME64, check_against_reference, make_x


@pytest.fixture(params=["one-launch", "pipeline"])
def plan(request, monkeypatch):
    monkeypatch.setattr(config, "one_launch", request.param == "one-launch")
    return request.param


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 9])
@pytest.mark.parametrize("circular", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_eca_halo_across_channel_tiles(triton_backend, plan, kernel_size, circular, layout, device, monkeypatch):
    """C = 300 in tiles of 16 channels (many programs wanted, however small): every tile's halo
    crosses into its neighbours, the last tile is partial, CECA's halo wraps around."""
    monkeypatch.setattr(config, "target_programs", 1 << 12)
    monkeypatch.setattr(one_launch, "MIN_PROGRAM_BYTES", 0)
    C = 300
    cls, ref_cls = (fusedattn.CECA, CecaModule) if circular else (fusedattn.ECA, EcaModule)
    fused = cls(C, kernel_size=kernel_size).to(device)
    x = make_x((2, C, 3, 5), torch.float32, layout, device)
    assert eca_tile_c(channel_view(x), kernel_size) < C // 4
    check_against_reference(fused, ref_cls(C, kernel_size=kernel_size), x, torch.float32,
                            f"ECA {plan} K={kernel_size} circular={circular} {layout}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_se_both_plans_match_reference(triton_backend, plan, dtype, layout, device):
    C = 40
    fused = fusedattn.SE(C, rd_ratio=0.25, add_maxpool=True).to(device, dtype)
    x = make_x((3, C, 5, 7), dtype, layout, device)
    check_against_reference(fused, SEModule(C, rd_ratio=0.25, add_maxpool=True), x, dtype, f"SE {plan} {dtype}")


def test_se_one_launch_wide_hidden(triton_backend, device, monkeypatch):
    """rd = C = 300: the hidden vector spans many weight tiles of the one program."""
    monkeypatch.setattr(config, "one_launch", True)
    C = 300
    fused = fusedattn.SE(C, rd_ratio=1.0, bias=False).to(device)
    x = make_x((2, C, 3, 3), torch.float32, "channels_last", device)
    check_against_reference(fused, SEModule(C, rd_ratio=1.0, bias=False), x, torch.float32, "SE wide")


@pytest.mark.parametrize("block", ["se", "eca"])
def test_one_launch_is_deterministic(triton_backend, block, device, monkeypatch):
    monkeypatch.setattr(config, "one_launch", True)
    C = 64
    fused = (fusedattn.SE(C) if block == "se" else fusedattn.ECA(C)).to(device)
    x = make_x((2, C, 9, 9), torch.float32, "nchw", device)
    assert torch.equal(fused(x), fused(x))


def test_se_rule():
    """The launcher's rule on the H100 profile: one launch while one program's bytes (x twice,
    both weights) stay under GPUProfile.one_launch_bytes and the batch fits one wave."""
    old = config.profile
    config.profile = config.PROFILES["h100"]
    try:
        def fits(shape, dtype):
            C = shape[1]
            return se_fits_one_launch(torch.empty(shape, dtype=dtype, device="meta"),
                                      torch.empty((C // 16, C), dtype=dtype, device="meta"))
        assert fits((1, 64, 4, 4), torch.float32) and fits((8, 256, 14, 14), torch.float32)
        assert fits((1, 512, 7, 7), torch.bfloat16)
        assert not fits((1, 2048, 7, 7), torch.bfloat16)       # 1 MB of weights for one SM
        assert not fits((1, 256, 56, 56), torch.bfloat16)      # 3.2 MB of x for one SM
        assert not fits((200, 64, 4, 4), torch.float32)        # more samples than SMs
        assert not fits((0, 64, 4, 4), torch.float32)
    finally:
        config.profile = old


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("add_maxpool", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_se_batch_of_one_weight_grads_in_the_same_launch(triton_backend, bias, add_maxpool, layout, device):
    """B = 1: the backward launch writes dW1, dW2 (and the bias gradients) itself."""
    C = 40
    kw = dict(rd_ratio=0.25, bias=bias, add_maxpool=add_maxpool)
    fused = fusedattn.SE(C, **kw).to(device)
    x = make_x((1, C, 5, 3), torch.float32, layout, device)
    check_against_reference(fused, SEModule(C, **kw), x, torch.float32, f"SE B=1 {kw}")
    kw = dict(rd_channels=2, bias=bias, add_maxpool=add_maxpool)   # small: gradcheck per parameter
    fused64 = fusedattn.SE(6, **kw).to(device, torch.float64)
    x64 = make_x((1, 6, 3, 3), torch.float64, layout, device)
    names = [n for n, _ in fused64.named_parameters()]

    def call(t, *ps):
        return torch.func.functional_call(fused64, dict(zip(names, ps)), (t,))
    assert torch.autograd.gradcheck(call, (x64.requires_grad_(True), *(   # full Jacobian for NCHW (CI time)
        p.detach().requires_grad_(True) for p in fused64.parameters())), fast_mode=layout == "channels_last")


@pytest.mark.parametrize("circular", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_eca_single_program_writes_weight_grads(circular, bias, device):
    """B = 1 and one channel tile: the backward launch writes dw (and dbias) itself; gradcheck
    through it, and its gradients against the plain-PyTorch path."""
    from fusedattn.ops.eca import eca

    C, K = 24, 5
    x = make_x((1, C, 2, 2), torch.float64, "nchw", device)
    assert eca_tile_c(channel_view(x), K) >= C
    w = torch.randn(1, 1, K, dtype=torch.float64, device=device)
    b = torch.randn(1, dtype=torch.float64, device=device) if bias else None
    inputs = tuple(t.requires_grad_(True) for t in (x, w, b) if t is not None)

    def call(*ts):
        return eca(ts[0], ts[1], ts[2] if bias else None, circular=circular)
    grads = {}
    for name in ("triton", "torch"):
        with fusedattn.use_backend(name):
            if name == "triton":   # a random projection (CI time): every entry is compared to the torch path below
                assert torch.autograd.gradcheck(call, inputs, fast_mode=True)
            y = call(*inputs)
            grads[name] = torch.autograd.grad(y, inputs, torch.cos(y))
    for got, want in zip(grads["triton"], grads["torch"]):
        assert torch.allclose(got, want, rtol=1e-10, atol=SAME64)
