"""Coordinate Attention's own suite (the shared battery runs its rows of tests/blocks.py): odd
shapes and strided views with several W tiles and H splits (the partial sums), every option of
the gate, full-Jacobian gradcheck with bn1's batch statistics, running statistics over steps,
the authors' CoordAtt, SyncBatchNorm in place of bn1, convert."""
import copy

import pytest
import torch
from torch import nn

import fusedattn
from fusedattn.kernels import config
from fusedattn.kernels.coord_attn import plan_strips
from fusedattn.reference import CoordAtt, CoordAttn
from helpers import DTYPES, LAYOUTS, check_against_reference, float64_bound, make_x, rel_err


def _random(ref):
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.5)
        if isinstance(ref.bn1, nn.BatchNorm2d):
            ref.bn1.running_mean.normal_()
            ref.bn1.running_var.uniform_(0.5, 2.0)
    return ref


#: (B, C, H, W): odd sizes; C = 130 (NCHW: 3 channel blocks); 1 x 40 x 17 x 70 in channels_last: 2
#: channel blocks of 32, W in 2 tiles of 64 (row partials), and with many-h-splits 2 H splits
SHAPES = [(2, 16, 3, 5), (1, 8, 1, 1), (3, 130, 6, 37), (2, 24, 17, 1), (1, 40, 17, 70)]


@pytest.fixture(params=["default-plan", "many-h-splits"])
def plan(request, monkeypatch):
    """The launcher's plan, or one H split per row (target_programs far above B x channel blocks)."""
    if request.param == "many-h-splits":
        monkeypatch.setattr(config, "target_programs", 1 << 12)
    return request.param


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(backend, plan, shape, dtype, layout, device):
    # bn1's batch statistics over B (H + W) values: over 2 (1 x 1 maps at B = 1) the normalisation is
    # ill-conditioned (two near values, a variance near 0), so such shapes run eval()
    ref = _random(CoordAttn(shape[1], rd_channels=8, bias=True)).train(shape[0] * (shape[2] + shape[3]) >= 8)
    x = make_x(shape, dtype, layout, device)
    check_against_reference(fusedattn.CoordAttn.from_module(copy.deepcopy(ref)).to(device, dtype), ref, x, dtype,
                            f"coord {shape} {dtype} {layout} {plan}")


def test_plans_cover_the_partials(monkeypatch):
    """The shapes above do reach several W tiles, channel blocks and H splits."""
    x = torch.empty(1, 40, 17, 70).to(memory_format=torch.channels_last)
    p = plan_strips(x)
    assert p.n_wtiles == 2 and p.n_cblocks == 2 and p.n_hsplits == 1
    monkeypatch.setattr(config, "target_programs", 1 << 12)
    assert plan_strips(x).n_hsplits == 2


@pytest.mark.parametrize("view", ["transposed-hw", "strided-w", "channel-slice"])
def test_strided_views(backend, view, device):
    ref = _random(CoordAttn(16, rd_channels=4)).train()
    base = torch.randn(2, 32, 9, 14, dtype=torch.float64, device=device)
    x = {"transposed-hw": base[:, :16].transpose(2, 3), "strided-w": base[:, :16, :, ::2],
         "channel-slice": base[:, 8:24]}[view]
    check_against_reference(fusedattn.CoordAttn.from_module(copy.deepcopy(ref)).to(device, torch.float64), ref, x,
                            torch.float64, f"coord {view}")


@pytest.mark.parametrize("options", [dict(), dict(norm_layer=None, act_layer="relu"),
                                     dict(gate_layer="hard_sigmoid", has_skip=True, bias=True, act_layer="gelu")],
                         ids=["default", "no-norm", "skip-hardsigmoid"])
def test_gradcheck_full_jacobian(triton_backend, options, device):
    fused = fusedattn.CoordAttn.from_module(_random(CoordAttn(6, rd_channels=3, **options)).double().train()).to(device)
    x = torch.randn(2, 6, 2, 3, dtype=torch.float64, device=device, requires_grad=True)
    names = [n for n, _ in fused.named_parameters()]

    def fn(x, *params):
        return torch.func.functional_call(fused, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *fused.parameters()), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_running_statistics_follow_the_reference(backend, device):
    """Three train() steps, then eval(): bn1's running statistics and num_batches_tracked as
    nn.BatchNorm2d keeps them (momentum 0.1, and the cumulative average with momentum=None)."""
    for momentum in (0.1, None):
        ref = _random(CoordAtt(16, 16, reduction=4)).double().train()
        ref.bn1.momentum = momentum
        fused = fusedattn.CoordAttn.from_module(copy.deepcopy(ref)).to(device)
        for _ in range(3):
            x = torch.randn(3, 16, 5, 6, dtype=torch.float64, device=device)
            fused(x)
            ref(x.cpu())
        for name, buf in ref.bn1.named_buffers():
            assert torch.allclose(getattr(fused.bn1, name).cpu(), buf, rtol=1e-12, atol=1e-14), name
        x = torch.randn(2, 16, 4, 4, dtype=torch.float64, device=device)
        # the reference on the CPU; the fused gate's nn.Hardswish on CUDA multiplies by float32(1/6)
        assert rel_err(fused.eval()(x).cpu(), ref.eval()(x.cpu())) <= float64_bound(ref, device, fused)


def test_authors_layout_and_convert():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), CoordAtt(16, 16), nn.ReLU(), CoordAttn(16)).double().train()
    converted, report = fusedattn.convert(model)
    assert [type(m) for m in converted] == [nn.Conv2d, fusedattn.CoordAttn, nn.ReLU, fusedattn.CoordAttn]
    assert len(report.replaced) == 2
    assert converted.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    assert rel_err(converted(x), model(x)) < 1e-12
    fresh = fusedattn.CoordAtt(16, 16)
    assert fresh.state_dict().keys() == CoordAtt(16, 16).state_dict().keys()
    with pytest.raises(ValueError, match="oup"):
        fusedattn.CoordAtt(16, 32)


def test_sync_batchnorm_swapped_in_runs_as_a_module():
    """torch.nn.SyncBatchNorm.convert_sync_batchnorm replaces bn1 (not an nn.BatchNorm2d): the block
    then runs bn1 as that module (here in one process: plain batch statistics), not as Identity."""
    ref = _random(CoordAttn(16, rd_channels=4)).double().train()
    fused = nn.SyncBatchNorm.convert_sync_batchnorm(fusedattn.CoordAttn.from_module(copy.deepcopy(ref)))
    assert isinstance(fused.bn1, nn.SyncBatchNorm)
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    assert rel_err(fused(x), ref(x)) < 1e-12


def test_refused_options():
    with pytest.raises(ValueError, match="norm_layer"):
        fusedattn.CoordAttn(16, norm_layer=nn.LayerNorm)
    with pytest.raises(ValueError, match="gate_layer"):
        fusedattn.CoordAttn(16, gate_layer="relu")
    with pytest.raises(ValueError, match="conv1_weight must have shape"):
        fusedattn.coord_attention(torch.randn(2, 16, 4, 4), torch.randn(4, 8, 1, 1), torch.randn(16, 4, 1, 1),
                                  torch.randn(16, 4, 1, 1))
    with pytest.raises(ValueError, match="all be given"):
        fusedattn.coord_attention(torch.randn(2, 16, 4, 4), torch.randn(4, 16, 1, 1), torch.randn(16, 4, 1, 1),
                                  torch.randn(16, 4, 1, 1), conv1_bias=torch.randn(4))
