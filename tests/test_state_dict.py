"""timm layouts load unchanged; from_module carries weights, device, dtype and mode."""
import pytest
import torch
from torch import nn

import fusedattn
from fusedattn.reference import CecaModule, EcaModule, LinearSE, SEModule


def test_se_state_dict_keys_and_shapes_match_timm():
    ref, fused = SEModule(256), fusedattn.SE(256)
    assert {k: v.shape for k, v in ref.state_dict().items()} == \
        {k: v.shape for k, v in fused.state_dict().items()}
    assert fused.fc1.weight.shape == (16, 256, 1, 1)


def test_se_rd_channels_rule():
    # make_divisible(C / 16, 8, round_limit=0): at least 8, rounded to a multiple of 8
    for c, rd in [(64, 8), (256, 16), (200, 16), (2048, 128), (24, 8)]:
        assert fusedattn.SE(c).fc1.out_channels == rd == SEModule(c).fc1.out_channels


@pytest.mark.parametrize("kw", [{}, {"bias": False}, {"add_maxpool": True, "rd_ratio": 0.25}])
def test_se_round_trip_with_timm_layout(kw):
    ref = SEModule(64, **kw)
    fused = fusedattn.SE(64, **kw)
    fused.load_state_dict(ref.state_dict())  # strict
    back = SEModule(64, **kw)
    back.load_state_dict(fused.state_dict())
    x = torch.randn(2, 64, 5, 5)
    torch.testing.assert_close(fused(x), ref(x))
    torch.testing.assert_close(back(x), ref(x))


def test_se_loads_linear_layout_state_dict():
    src = LinearSE(64, reduction=16)
    sd = src.state_dict()
    assert set(sd) == {"fc.0.weight", "fc.2.weight"} and sd["fc.0.weight"].shape == (4, 64)
    fused = fusedattn.SE(64, rd_channels=4, bias=False)
    fused.load_state_dict(sd)
    x = torch.randn(3, 64, 4, 4)
    torch.testing.assert_close(fused(x), src(x))


@pytest.mark.parametrize("make", [
    lambda cls: cls(256), lambda cls: cls(kernel_size=5),
    lambda cls: cls(kernel_size=5, act_layer=nn.ReLU) if cls in (CecaModule, fusedattn.CECA) else cls(kernel_size=7)])
@pytest.mark.parametrize("ref_cls,fused_cls", [(EcaModule, fusedattn.ECA), (CecaModule, fusedattn.CECA)])
def test_eca_round_trip_with_timm_layout(make, ref_cls, fused_cls):
    ref, fused, back = make(ref_cls), make(fused_cls), make(ref_cls)
    fused.load_state_dict(ref.state_dict())  # strict, both ways
    back.load_state_dict(fused.state_dict())
    x = torch.randn(2, 256, 3, 3)
    torch.testing.assert_close(fused(x), ref(x))
    torch.testing.assert_close(back(x), ref(x))


@pytest.mark.parametrize("src", [
    lambda: SEModule(32, add_maxpool=True), lambda: SEModule(32, bias=False), lambda: LinearSE(32, 4),
    lambda: LinearSE(32, 4, bias=True), lambda: EcaModule(32), lambda: CecaModule(kernel_size=5),
    lambda: CecaModule(kernel_size=3, act_layer=nn.ReLU)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_from_module(src, mode):
    m = src().double()
    m.train(mode == "train")
    fused = (fusedattn.ECA if hasattr(m, "conv") else fusedattn.SE).from_module(m)
    assert fused.training == m.training
    assert next(fused.parameters()).dtype == torch.float64
    x = torch.randn(2, 32, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(fused(x), m(x), rtol=1e-12, atol=1e-12)
    assert isinstance(fused, fusedattn.CECA) == isinstance(m, CecaModule)
