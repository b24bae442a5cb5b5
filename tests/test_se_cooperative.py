"""SE's cooperative forward and backward (kernels/se_cooperative.py: the whole call in one launch each
way, many programs per sample) against the float64 reference, with many channel blocks and H*W splits, every option
of the gate, the residual epilogue, float64 gradcheck, run-to-run bitwise results with the counters
left at zero, and the launcher's rule. Under the interpreter its programs run one after another:
every program but the sample's last polls the flag, gives up and leaves its tiles, which the last
one (the one that raised the flag) then takes from the claim counter."""
import pytest
import torch
import torch.nn.functional as F

import fusedattn
from fusedattn.kernels import arrival, config, se as se_launchers, se_cooperative
from fusedattn.kernels.layout import channel_view
from fusedattn.reference import SEModule
from helpers import DTYPES, LAYOUTS, ODD_SHAPES, assert_close, check_against_reference, make_x


@pytest.fixture
def launches(monkeypatch):
    """config.cooperative forced (both passes), programs for many splits; yields the list of
    cooperative launches made, "fwd" / "bwd" (a test fails if the launcher silently took another
    plan)."""
    made = []
    monkeypatch.setattr(config, "cooperative", True)
    monkeypatch.setattr(config, "target_programs", 64)
    for name, tag in (("se_cooperative", "fwd"), ("se_cooperative_backward", "bwd")):
        launch = getattr(se_launchers, name)
        monkeypatch.setattr(se_launchers, name, lambda *a, _l=launch, _t=tag, **k: (made.append(_t), _l(*a, **k))[1])
    with fusedattn.use_backend("triton"):
        yield made


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cooperative_matches_reference(launches, dtype, layout, device):
    """C = 300 (NCHW: 2-channel blocks, 150 of them; channels_last: 128-channel blocks, the last
    partial), max pool on, H*W split over several programs per channel block."""
    C = 300
    kw = dict(rd_ratio=0.25, add_maxpool=True)
    fused = fusedattn.SE(C, **kw).to(device, dtype)
    x = make_x((2, C, 6, 7), dtype, layout, device)
    check_against_reference(fused, SEModule(C, **kw), x, dtype, f"SE cooperative {dtype} {layout}")
    assert launches == ["fwd", "bwd"], launches


@pytest.mark.parametrize("shape", ODD_SHAPES, ids=str)
@pytest.mark.parametrize("add_maxpool", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_cooperative_odd_shapes_and_options(launches, shape, add_maxpool, bias, device):
    C = shape[1]
    kw = dict(rd_channels=max(C // 4, 1), add_maxpool=add_maxpool, bias=bias)
    fused = fusedattn.SE(C, **kw).to(device)
    x = make_x(shape, torch.float32, "channels_last", device)
    check_against_reference(fused, SEModule(C, **kw), x, torch.float32, f"SE cooperative {shape} {kw}")
    assert launches == ["fwd", "bwd"], launches


def test_cooperative_wide_hidden(launches, device):
    """RD = C = 300: the hidden shares, their sum and every tile's gate walk RD in several tiles."""
    C = 300
    fused = fusedattn.SE(C, rd_ratio=1.0).to(device, torch.float64)
    x = make_x((1, C, 3, 3), torch.float64, "channels_last", device)
    check_against_reference(fused, SEModule(C, rd_ratio=1.0), x, torch.float64, "SE cooperative wide")
    plan = se_cooperative.se_cooperative_plan(channel_view(x), C, 9)
    assert plan.n_cblocks > 1 and 300 > se_cooperative.WEIGHT_TILE // plan.block_c


@pytest.mark.parametrize("act", [None, "relu", "silu"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cooperative_residual_epilogue(launches, act, layout, device):
    """y = act(x * gate + shortcut) written by the tiles."""
    C = 40
    ref = SEModule(C, rd_ratio=0.25).to(device).double()
    fused = fusedattn.SE.from_module(ref).float()
    x = make_x((2, C, 5, 7), torch.float32, layout, device)
    shortcut = make_x((2, C, 5, 7), torch.float32, layout, device)
    y = fused(x, shortcut=shortcut, act=act)
    want = {None: lambda t: t, "relu": F.relu, "silu": F.silu}[act](ref(x.double()) + shortcut.double())
    assert_close(y, want, torch.float32, f"SE cooperative epilogue {act} {layout}")


@pytest.mark.parametrize("mlp_act, gate", [("silu", "hard_sigmoid"), ("gelu", "sigmoid")])
def test_cooperative_activations(launches, mlp_act, gate, device):
    """Other hidden activations and gates of the table (timm's SqueezeExcite options)."""
    from fusedattn.kernels.activations import ACTIVATIONS as CODES

    C = 24
    fused = fusedattn.SE(C, rd_ratio=0.25).to(device, torch.float64)
    fused.mlp_act, fused.gate_fn = CODES[mlp_act], CODES[gate]
    x = make_x((2, C, 4, 5), torch.float64, "nchw", device)
    w1, b1 = fused.fc1.weight.flatten(1), fused.fc1.bias
    w2, b2 = fused.fc2.weight.flatten(1), fused.fc2.bias
    h = x.mean((2, 3)) @ w1.T + b1
    h = F.silu(h) if mlp_act == "silu" else F.gelu(h)
    z = h @ w2.T + b2
    g = F.hardsigmoid(z) if gate == "hard_sigmoid" else torch.sigmoid(z)
    assert_close(fused(x), x * g[:, :, None, None], torch.float64, f"SE cooperative {mlp_act} {gate}")


@pytest.mark.parametrize("add_maxpool", [False, True])
def test_cooperative_gradcheck_float64(launches, add_maxpool, device):
    """gradcheck through the cooperative forward (the backward is the pipeline's, from its saved
    pooled / hidden / gate vectors: they must be the forward's exactly)."""
    C, RD = 5, 3
    x = make_x((2, C, 3, 2), torch.float64, "nchw", device, requires_grad=True)
    ps = [torch.randn(s, dtype=torch.float64, device=device, requires_grad=True)
          for s in ((RD, C, 1, 1), (RD,), (C, RD, 1, 1), (C,))]
    fn = lambda *a: fusedattn.se(*a, add_maxpool=add_maxpool)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, *ps), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert "fwd" in launches and "bwd" in launches


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("add_maxpool", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cooperative_batch_of_one_writes_weight_grads(launches, bias, add_maxpool, layout, device, monkeypatch):
    """B = 1: the backward launch writes dW1, dW2 (and the bias gradients) itself, no weight-gradient
    launch after it; against the reference, and gradcheck per parameter."""
    from fusedattn.kernels import batch_outer

    monkeypatch.setattr(batch_outer, "batch_outer_pair", lambda *a, **k: pytest.fail("a weight-gradient launch"))
    C = 40
    kw = dict(rd_ratio=0.25, bias=bias, add_maxpool=add_maxpool)
    fused = fusedattn.SE(C, **kw).to(device)
    x = make_x((1, C, 5, 3), torch.float32, layout, device)
    check_against_reference(fused, SEModule(C, **kw), x, torch.float32, f"SE cooperative B=1 {kw}")
    kw = dict(rd_channels=2, bias=bias, add_maxpool=add_maxpool)
    fused64 = fusedattn.SE(6, **kw).to(device, torch.float64)
    x64 = make_x((1, 6, 3, 3), torch.float64, layout, device)
    names = [n for n, _ in fused64.named_parameters()]

    def call(t, *ps):
        return torch.func.functional_call(fused64, dict(zip(names, ps)), (t,))
    assert torch.autograd.gradcheck(call, (x64.requires_grad_(True), *(
        p.detach().requires_grad_(True) for p in fused64.parameters())), fast_mode=True)
    assert launches.count("bwd") >= 2


def test_cooperative_repeats_bitwise_and_leaves_counters_at_zero(launches, device):
    C = 300
    fused = fusedattn.SE(C, rd_ratio=0.25, add_maxpool=True).to(device)
    x = make_x((3, C, 5, 6), torch.float32, "channels_last", device)
    with torch.no_grad():
        a, b = fused(x), fused(x)
    assert torch.equal(a, b) and not a.isnan().any()
    dy = make_x(x.shape, torch.float32, "channels_last", device)
    grads = [torch.autograd.grad(fused(x.requires_grad_(True)), [x, *fused.parameters()], dy) for _ in range(2)]
    assert all(torch.equal(g, h) for g, h in zip(*grads))
    assert all(bool((c == 0).all()) for c in arrival._COUNTERS.values())
    assert launches == ["fwd", "fwd", "fwd", "bwd", "fwd", "bwd"], launches


def test_cooperative_matches_pipeline(device, monkeypatch):
    """The same numbers as the pipeline it replaces, forward and every gradient (float64: to
    rounding)."""
    C = 64
    fused = fusedattn.SE(C, rd_ratio=0.25, add_maxpool=True).to(device, torch.float64)
    x = make_x((2, C, 7, 7), torch.float64, "channels_last", device)
    dy = make_x(x.shape, torch.float64, "channels_last", device)
    outs = {}
    with fusedattn.use_backend("triton"):
        for coop in (True, False):
            monkeypatch.setattr(config, "cooperative", coop)
            monkeypatch.setattr(config, "one_launch", None if coop else False)
            xx = x.clone().requires_grad_(True)
            y = fused(xx)
            outs[coop] = (y, *torch.autograd.grad(y, [xx, *fused.parameters()], dy))
    for a, b in zip(outs[True], outs[False]):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_rule():
    """On the H100 profile: a call that pools in one resident wave (B x channel blocks <= SMs) and
    fits the L2 chunk is cooperative, unless one program per sample already fits
    (kernels/one_launch.py) or config.one_launch forces a plan."""
    old = config.profile
    config.profile = config.PROFILES["h100"]
    try:
        def plan(shape, dtype=torch.bfloat16, layout=torch.channels_last, backward=False):
            C = shape[1]
            x = torch.empty(shape, dtype=dtype, device="meta").to(memory_format=layout)
            return se_launchers.se_plan(channel_view(x), torch.empty((C // 16, C), dtype=dtype, device="meta"), backward)
        for stage in ((1, 256, 56, 56), (1, 512, 28, 28), (1, 1024, 14, 14), (1, 2048, 7, 7), (8, 256, 56, 56)):
            assert plan(stage) == "cooperative", stage
            assert plan(stage, backward=True) == "cooperative", stage
        assert plan((1, 64, 4, 4)) == "one-program"
        assert plan((64, 2048, 7, 7)) == "pipeline"          # 1024 channel blocks: more than one wave
        assert plan((32, 256, 56, 56)) == "pipeline"         # 51 MB: over the L2 chunk (25 MiB)
        for forced in (False, True):
            config.one_launch = forced
            assert plan((1, 256, 56, 56)) == ("one-program" if forced else "pipeline")
    finally:
        config.profile, config.one_launch = old, None
