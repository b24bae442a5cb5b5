"""Bundled ResNets (fused vs reference) and fusedattn.convert on models holding every layout."""
import copy
import pickle

import pytest
import torch
from torch import nn

import fusedattn
from fusedattn import models
from fusedattn.reference import (CbamModule, CecaModule, ConvBiasCBAM, EcaModule, LinearSE, OriginalCBAM,
                                 PSAModule, SelectiveKernel, SEModule, TutorialCBAM)
from fusedattn.modules.conversion import is_relu, is_sigmoid
from fusedattn.reference.activations import Sigmoid as TimmSigmoid
from helpers import assert_close, make_x, randomize_batchnorm, rounding_gap


def _fwd_bwd(model, x):
    """(y, dx, parameter gradients keyed and shaped as the model's state_dict), so a converted
    model (fc1.weight) and the original (fc.0.weight, Linear) compare key by key."""
    x = x.detach().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    y = model(x)
    y.square().sum().backward()
    grads = copy.deepcopy(model)
    with torch.no_grad():
        for p in grads.parameters():
            p.copy_(p.grad if p.grad is not None else torch.zeros_like(p))
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return y.detach(), x.grad, {k: v for k, v in grads.state_dict().items() if not k.endswith(buffers)}


def _same(a, b, what, tol=1e-7):
    """Whole float64 networks agree to ``tol``: each op is exact to ~1e-16, but 20-50 layers of
    training-mode BatchNorm over a batch of 2-3 amplify the rounding differences (seen: 4e-9, and
    for some draws far more: the callers widen tol to 10x rounding_gap)."""
    ya, dxa, ga = a
    yb, dxb, gb = b
    assert_close(ya, yb, torch.float64, f"{what} y", tol=tol)
    assert_close(dxa, dxb, torch.float64, f"{what} dx", tol=tol)
    assert ga.keys() == gb.keys()
    for n in ga:
        assert_close(ga[n], gb[n], torch.float64, f"{what} d{n}", floor=1.0, tol=tol)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("attn", [None, "se", "eca", "cbam", "coord", "simam"])
def test_bundled_resnet_fused_matches_reference(triton_backend, arch, attn, device):
    kw = dict(width=8, num_classes=7)
    ref = getattr(models, arch)(attn=attn, fused=False, **kw).double().to(device)
    fused = getattr(models, arch)(attn=attn, **kw).double().to(device)
    assert ref.state_dict().keys() == fused.state_dict().keys()
    fused.load_state_dict(ref.state_dict())
    side = 64 if attn == "simam" else 32   # SimAM on the last stage's 1x1 maps is NaN (n = 0), in both
    x = make_x((2, 3, side, side), torch.float64, "channels_last", device)
    before = copy.deepcopy(ref)
    expected = _fwd_bwd(ref, x)
    tol = max(1e-7, 10 * rounding_gap(_fwd_bwd, before, x, expected))
    _same(_fwd_bwd(fused, x), expected, f"{arch} {attn}", tol=tol)
    if attn in ("se", "eca"):
        assert all(b.fused_epilogue for b in fused.modules() if isinstance(b, (models.BasicBlock, models.Bottleneck)))
    for (n, b), r in zip(fused.named_buffers(), ref.buffers()):
        torch.testing.assert_close(b, r, msg=n)


def test_bundled_resnet_shapes():
    m = models.resnet34(attn="se")
    assert m.fc.in_features == 512 and len(m.layer3) == 6
    m = models.resnet50(attn="eca", num_classes=10)
    assert m.fc.in_features == 2048 and m.layer1[0].attn.conv.kernel_size == (5,)
    with pytest.raises(ValueError, match="attn must be one of"):
        models.resnet18(attn="gc")


class Zoo(nn.Module):
    """A small model holding every layout convert() knows, plus two it must leave alone."""

    def __init__(self, C=16):
        super().__init__()
        silu_se = SEModule(C, rd_channels=4)
        silu_se.act = nn.Mish()  # an SE whose activation the fused SE does not have (not in the table)
        linear_silu = LinearSE(C, reduction=4)
        linear_silu.fc[1] = nn.Mish()
        self.stem = nn.Conv2d(3, C, 3, padding=1)
        self.blocks = nn.Sequential(
            SEModule(C, rd_channels=4), LinearSE(C, reduction=4), EcaModule(kernel_size=3), CecaModule(kernel_size=5),
            CbamModule(C, rd_channels=4).eval(), TutorialCBAM(C, ratio=4), ConvBiasCBAM(C, reduction=4),
            OriginalCBAM(C, reduction_ratio=4), SelectiveKernel(C, C), silu_se, linear_silu,
            PSAModule(C, 4 * C, conv_groups=(1, 2, 4, 8)))
        self.head = nn.Linear(4 * C, 5)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_convert_replaces_every_layout_and_keeps_results(backend, mode, device):
    model = randomize_batchnorm(Zoo(), affine=False).double().to(device).train(mode == "train")
    original = copy.deepcopy(model)
    converted, report = fusedattn.convert(model)
    kinds = [type(b).__name__ for b in converted.blocks]
    assert kinds == ["SE", "SE", "ECA", "CECA", "CBAM", "CBAM", "CBAM", "CBAM", "SelectiveKernel",
                     "SEModule", "LinearSE", "PSA"], "unsupported variants (9, 10) stay in place"
    assert len(report.replaced) == 10 and [p for p, _, _ in report.left] == ["blocks.9", "blocks.10"]
    assert all("is not a fused activation" in why for _, _, why in report.left), report.left
    assert "blocks.9: SEModule" in str(report)
    assert converted.training == original.training and next(converted.parameters()).dtype == torch.float64
    for name, p in model.named_parameters():  # inplace=False left the model as it was
        torch.testing.assert_close(p, original.get_parameter(name))
    assert type(model.blocks[0]) is SEModule
    x = make_x((3, 3, 6, 6), torch.float64, "nchw", device)
    _same(_fwd_bwd(converted, x), _fwd_bwd(original, x), f"converted zoo ({mode})")


def test_converted_state_dict_loads_into_the_original_class_and_back():
    model = randomize_batchnorm(Zoo(), affine=False).eval()
    converted, _ = fusedattn.convert(model)
    sd = converted.state_dict()
    assert sd.keys() == model.state_dict().keys()
    fresh = Zoo()
    fresh.load_state_dict(sd)  # strict: the original class loads the converted model's weights
    again, _ = fusedattn.convert(Zoo().eval())
    again.load_state_dict(model.state_dict())  # and the converted model loads the original's
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(again(x), model(x))
    torch.testing.assert_close(fresh.eval()(x), model(x))


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "torch.save"])
def test_converted_and_bundled_models_pickle(how, tmp_path):
    """Every layout convert() handles (Linear SE and the CBAM layouts save their state_dict in the
    source's keys through a hook) and a bundled model survive pickling with their results and keys
    (was: Can't pickle local object '_save_in_layout.<locals>.hook')."""
    def roundtrip(m):
        if how == "pickle":
            return pickle.loads(pickle.dumps(m))
        if how == "deepcopy":
            return copy.deepcopy(m)
        torch.save(m, tmp_path / "m.pt")
        return torch.load(tmp_path / "m.pt", weights_only=False)

    x = torch.randn(2, 3, 5, 5)
    for model in (fusedattn.convert(randomize_batchnorm(Zoo(), affine=False).eval())[0],
                  models.resnet18(attn="cbam", width=8, num_classes=3).eval()):
        again = roundtrip(model)
        assert again.state_dict().keys() == model.state_dict().keys()
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def test_convert_bundled_reference_model_uses_the_residual_epilogue(backend, device):
    ref = models.resnet18(attn="se", fused=False, width=8, num_classes=3).double().to(device)
    converted, report = fusedattn.convert(ref)
    assert len(report.replaced) == 8 and len(report.epilogues) == 8 and report.left == []
    x = make_x((2, 3, 16, 16), torch.float64, "nchw", device)
    _same(_fwd_bwd(converted, x), _fwd_bwd(ref, x), "converted resnet18-se")
    with pytest.raises(TypeError, match="nn.Module"):
        fusedattn.convert(lambda t: t)


def test_activations_are_recognised_by_what_they_compute():
    """timm builds its gates as its own Sigmoid class (not nn.Sigmoid): any spelling of sigmoid
    and ReLU is accepted, look-alikes are not."""
    for gate in ("sigmoid", nn.Sigmoid, nn.Sigmoid(), torch.sigmoid, TimmSigmoid, TimmSigmoid(inplace=True)):
        assert is_sigmoid(gate), gate
    for gate in (nn.Hardsigmoid(), nn.Hardsigmoid, "hard_sigmoid", nn.SiLU(), nn.Tanh, nn.Linear(1, 1), None, 3):
        assert not is_sigmoid(gate), gate
    for act in ("relu", nn.ReLU, nn.ReLU(inplace=True), torch.relu, torch.nn.functional.relu):
        assert is_relu(act), act
    for act in (nn.ReLU6(), nn.LeakyReLU(), nn.GELU, nn.SiLU(), "gelu", nn.PReLU()):
        assert not is_relu(act), act


def test_convert_leaves_blocks_with_another_gate_in_place():
    se, eca, cbam = SEModule(16, rd_channels=4), EcaModule(kernel_size=3), CbamModule(16, rd_channels=4)
    se.gate = nn.Tanh()   # SE's gate: sigmoid or hard sigmoid; ECA's and CBAM's: sigmoid
    for gate_of in (eca, cbam.spatial):
        gate_of.gate = nn.Hardsigmoid()
    model = nn.Sequential(se, eca, cbam, SEModule(16, rd_channels=4))
    converted, report = fusedattn.convert(model)
    assert [p for p, _, _ in report.left] == ["0", "1", "2"] and [p for p, _, _ in report.replaced] == ["3"]
    assert all("is not sigmoid" in why or "Tanh() is not a fused activation" in why for _, _, why in report.left), \
        report.left
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(converted(x), model(x))
