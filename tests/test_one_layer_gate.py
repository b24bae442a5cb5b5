"""The one-layer channel gate, x * gate(fc(pool(x))) with fc one C -> C 1x1 conv: timm's
EffectiveSEModule (fusedattn.EffectiveSE) and Ultralytics' ChannelAttention (fusedattn.ChannelAttention),
against their float64 reference layouts on both backends and every launch route."""
import pytest
import torch
from torch import nn

import fusedattn
from fusedattn.kernels import config
from fusedattn.reference import ChannelAttention, EffectiveSEModule
from helpers import DTYPES, LAYOUTS, ODD_SHAPES, check_against_reference, float64_bound, make_x, rel_err


def _pair(kind, C, **kw):
    ref = EffectiveSEModule(C, **kw) if kind == "ese" else ChannelAttention(C)
    return fusedattn.convert(nn.Sequential(ref))[0][0], ref


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["ese", "channel-attention"])
def test_one_layer_gate_matches_reference(backend, pipeline, kind, dtype, layout, device):
    C = 24
    fused, ref = _pair(kind, C)
    assert type(fused) is (fusedattn.EffectiveSE if kind == "ese" else fusedattn.ChannelAttention)
    x = make_x((3, C, 6, 5), dtype, layout, device)
    check_against_reference(fused.to(device, dtype), ref, x, dtype, f"{kind} {dtype} {layout}")


@pytest.mark.parametrize("shape", ODD_SHAPES, ids=str)
@pytest.mark.parametrize("add_maxpool,gate", [(False, "hard_sigmoid"), (True, "sigmoid"), (True, "hard_sigmoid")])
def test_effective_se_options_and_odd_shapes(backend, pipeline, shape, add_maxpool, gate, device):
    C = shape[1]
    fused = fusedattn.EffectiveSE(C, add_maxpool=add_maxpool, gate_layer=gate).to(device, torch.float64)
    x = make_x(shape, torch.float64, "nchw", device)
    check_against_reference(fused, EffectiveSEModule(C, add_maxpool=add_maxpool, gate_layer=gate), x, torch.float64,
                            f"ESE {shape} {add_maxpool} {gate}")


def test_one_layer_gate_wide_and_batched(triton_backend, device, monkeypatch):
    """C = 160 over several tiles, 20 samples: the dot-product tiles of the parallel gate kernels."""
    monkeypatch.setattr(config, "chunk_bytes", 1 << 14)
    C = 160
    fused, ref = _pair("ese", C, add_maxpool=True)
    x = make_x((20, C, 3, 3), torch.float32, "channels_last", device)
    check_against_reference(fused.to(device), ref, x, torch.float32, "ESE wide")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("add_maxpool", [False, True])
def test_one_layer_gate_gradcheck(triton_backend, layout, add_maxpool, device):
    C = 5
    x = make_x((2, C, 3, 2), torch.float64, layout, device, requires_grad=True)
    w = (0.3 * torch.randn(C, C, 1, 1, dtype=torch.float64, device=device)).requires_grad_()
    b = (0.3 * torch.randn(C, dtype=torch.float64, device=device)).requires_grad_()
    for gate in ("sigmoid", "hard_sigmoid"):
        assert torch.autograd.gradcheck(   # full Jacobian for NCHW with max pool, else a random projection (CI time)
            lambda x, w, b: fusedattn.se(x, w, b, None, None, add_maxpool=add_maxpool, gate=gate), (x, w, b),
            fast_mode=(layout, add_maxpool) != ("nchw", True))


def test_one_layer_gate_residual_epilogue(backend, device):
    """relu(ESE(x) + shortcut) as one op, against the unfused sum."""
    C = 16
    fused, ref = _pair("ese", C)
    fused, ref = fused.to(device).double(), ref.to(device).double()
    x = make_x((2, C, 4, 4), torch.float64, "channels_last", device, requires_grad=True)
    r = make_x((2, C, 4, 4), torch.float64, "channels_last", device, requires_grad=True)
    y = fused(x, shortcut=r, act="relu")
    want = torch.relu(ref(x) + r)
    g = torch.randn_like(want)
    got = torch.autograd.grad(y, (x, r, fused.fc.weight), g)
    exp = torch.autograd.grad(want, (x, r, ref.fc.weight), g)
    # SAME64; PyTorch's CUDA hard sigmoid rounds 1/6 to float32: 3e-8 of x * gate, which the
    # shortcut can cancel in y, so norms (an elementwise bound failed on an H100)
    bound = float64_bound(ref, device)
    assert rel_err(y, want) <= bound
    for a, e in zip(got, exp):
        assert rel_err(a, e, 1.0) <= max(1e-10, bound)


def test_one_layer_gate_state_dict_and_errors():
    ref = EffectiveSEModule(8)
    fused = fusedattn.EffectiveSE(8)
    assert fused.state_dict().keys() == ref.state_dict().keys() == {"fc.weight", "fc.bias"}
    fused.load_state_dict(ref.state_dict())
    ca = fusedattn.ChannelAttention(8)
    ca.load_state_dict(ChannelAttention(8).state_dict())
    with pytest.raises(ValueError, match="gate_layer"):
        fusedattn.EffectiveSE(8, gate_layer="relu")
    x = torch.randn(1, 8, 2, 2)
    with pytest.raises(ValueError, match="fc1_weight"):
        fusedattn.se(x, torch.randn(4, 8), None, None, None)
    with pytest.raises(ValueError, match="fc2_bias"):
        fusedattn.se(x, torch.randn(8, 8), None, None, torch.randn(8))
    no_bias = EffectiveSEModule(8)
    no_bias.fc = nn.Conv2d(8, 8, 1, bias=False)
    converted, report = fusedattn.convert(nn.Sequential(no_bias))
    assert converted[0] is not no_bias and isinstance(converted[0], EffectiveSEModule)
    assert "without bias" in report.left[0][2], str(report)
