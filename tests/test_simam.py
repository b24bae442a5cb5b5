"""SimAM's own suite (the shared battery runs its row of tests/blocks.py): odd shapes and
several H*W tiles per program, data far from zero in float32 (the shifted statistics), H*W = 1,
e_lambda, gradcheck, the authors' module through from_module / convert."""
import pytest
import torch
from torch import nn

import fusedattn
from fusedattn.kernels import config
from fusedattn.reference import SimAM
from helpers import DTYPES, LAYOUTS, ODD_SHAPES, TOL, check_against_reference, make_x, rel_err

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

#: odd shapes plus H*W = 2000: two 1024-wide tiles in NCHW (the statistics' merge) in one launch
#: (B = 2), and at batch 1 split over two programs (partial statistics, then merge and output)
SHAPES = ODD_SHAPES[:1] + ODD_SHAPES[2:] + [(2, 3, 40, 50), (1, 2, 40, 50)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(backend, shape, dtype, layout, device):
    x = make_x(shape, dtype, layout, device) * 2 + 0.5
    check_against_reference(fusedattn.SimAM(e_lambda=0.01).to(device), SimAM(e_lambda=0.01), x, dtype,
                            f"simam {shape} {dtype} {layout}")


@pytest.mark.parametrize("offset", [1e4, -3e4])
def test_far_from_zero_in_float32(backend, offset, device):
    """x + 1e4 in float32: the statistics keep float32 precision (shifted data, pairwise merge),
    where the reference run in float32 (E[(x - mean)^2] after a rounded mean) loses 3-4 digits."""
    x = torch.randn(2, 5, 40, 50, device=device) + offset
    ref = SimAM()
    x64 = x.double().requires_grad_()
    y64 = ref(x64)
    dy = torch.randn_like(y64)
    y64.backward(dy)
    xf = x.clone().requires_grad_()
    y = fusedattn.SimAM()(xf)
    y.backward(dy.float())
    assert rel_err(y, y64) < TOL[torch.float32] and rel_err(xf.grad, x64.grad) < TOL[torch.float32]


def test_one_pixel_is_nan_like_the_reference(backend, device):
    """H * W = 1: n = 0, a 0 / 0 variance; y and dx are NaN everywhere, as the reference's."""
    x = torch.randn(3, 4, 1, 1, device=device, requires_grad=True)
    y = fusedattn.SimAM()(x)
    y.backward(torch.ones_like(y))
    xr = x.detach().clone().requires_grad_()
    yr = SimAM()(xr)
    yr.backward(torch.ones_like(yr))
    assert y.isnan().all() and yr.isnan().all() and x.grad.isnan().all() and xr.grad.isnan().all()


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 1, 3), (2, 2, 33, 33)], ids=str)
def test_gradcheck(triton_backend, shape, device):
    """Full Jacobians on the small shapes; 33 x 33 (two H*W tiles in NCHW: the merged statistics)
    by a random projection (fast_mode: the full one takes 8 minutes under the interpreter)."""
    x = torch.randn(shape, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: fusedattn.simam(x, 0.05), (x,), eps=1e-6, atol=1e-7, rtol=1e-5,
                                    fast_mode=x.numel() > 1000)


def test_outputs_are_written(triton_backend, monkeypatch, device):
    """Every element and saved vector written (outputs poisoned with NaN first), channels_last
    with C not a multiple of the tile."""
    monkeypatch.setattr(config, "poison_outputs", True)
    x = make_x((2, 37, 5, 3), torch.float32, "channels_last", device, requires_grad=True)
    y = fusedattn.simam(x)
    y.backward(torch.randn_like(y))
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


def test_e_lambda_and_from_module():
    authors = SimAM(64, e_lambda=0.25)
    fused = fusedattn.SimAM.from_module(authors.eval())
    assert fused.e_lambda == 0.25 and not fused.training
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    assert rel_err(fused(x), authors(x)) < 1e-12
    with pytest.raises(ValueError, match="e_lambda"):
        fusedattn.SimAM(e_lambda=-1.0)
    with pytest.raises(TypeError, match="e_lambda"):
        fusedattn.simam(x, e_lambda="big")
    with pytest.raises(ValueError, match="no finite e_lambda"):
        fusedattn.SimAM.from_module(nn.Sigmoid())


def test_convert_finds_the_authors_module():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), fusedattn.reference.simam_module(8), nn.ReLU()).double()
    converted, report = fusedattn.convert(model)
    assert isinstance(converted[1], fusedattn.SimAM) and len(report.replaced) == 1
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    assert rel_err(converted(x), model(x)) < 1e-12


def test_plans_reach_both_routes():
    """The shapes above run the one-launch kernels and the H*W split (two launches: partial
    statistics, then merge and output) under the interpreter's plan (4 target programs)."""
    from fusedattn.kernels.layout import channel_view
    from fusedattn.kernels.simam import plan_simam
    one = plan_simam(channel_view(torch.empty(3, 19, 7, 5)), 3, 19, 35)
    split = plan_simam(channel_view(torch.empty(1, 2, 40, 50)), 1, 2, 2000)
    assert one.n_splits == 1 and split.n_splits == 2
