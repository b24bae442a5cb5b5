"""The activation table (kernels/activations.py and its PyTorch mirror, fusedattn/ops/activations.py)
and SE with every hidden activation and gate, against PyTorch's own functions and the float64
reference block."""
import pytest
import torch
import triton
import triton.language as tl
from torch import nn

import fusedattn
from fusedattn.kernels import config
from fusedattn.kernels.activations import ACTIVATIONS, GATES, activation, activation_grad, gate_grad
from fusedattn.modules.conversion import activation_code_of
from fusedattn.ops import activations as mirror
from fusedattn.reference import SEModule
from fusedattn.reference.activations import make_activation
from conftest import DEVICE
from helpers import CUDA_HARDSIGMOID64, SIXTHS, check_against_reference, make_x

NAMES = list(ACTIVATIONS)
GATE_NAMES = [n for n, c in ACTIVATIONS.items() if c in GATES]


@triton.jit
def _table_kernel(z_ptr, g_ptr, f_ptr, df_ptr, dgate_ptr, N, CODE: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < N
    z = tl.load(z_ptr + i, mask=m)
    g = tl.load(g_ptr + i, mask=m)
    f = activation(z, CODE)
    tl.store(f_ptr + i, f, mask=m)
    tl.store(df_ptr + i, activation_grad(g, z, CODE), mask=m)
    if CODE == 8 or CODE == 9:
        tl.store(dgate_ptr + i, gate_grad(g, f, CODE), mask=m)


def _probe_points(dtype):
    """Random values, the kinks (0, +-3, 6), both sides of them, large values and non-finite ones."""
    special = torch.tensor([0.0, -0.0, 3.0, -3.0, 6.0, 1e-3, -1e-3, 2.999, -2.999, 3.001, -3.001, 5.999, 6.001,
                            30.0, -30.0, 100.0, -100.0, float("nan"), float("inf"), float("-inf")], dtype=dtype)
    return torch.cat([torch.randn(300, dtype=dtype) * 4, special])


def _same_nonfinite(a, b, what):
    assert torch.equal(a.isnan(), b.isnan()), f"{what}: NaN pattern"
    fin = torch.isfinite(b)
    assert torch.equal(torch.isfinite(a), fin), f"{what}: inf pattern"
    assert torch.equal(a[~fin & ~b.isnan()], b[~fin & ~b.isnan()]), f"{what}: signs of infinities"
    return fin


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_kernel_table_is_pytorch(name, dtype):
    """Each kernel function and derivative against the PyTorch module and its autograd, NaN/inf and
    the gradient at the kinks included; the mirror (the CPU path's table) likewise."""
    code = ACTIVATIONS[name]
    z = _probe_points(dtype).to(DEVICE)
    g = torch.randn_like(z)
    out = [torch.full_like(z, float("nan")) for _ in range(3)]
    _table_kernel[(triton.cdiv(z.numel(), 128),)](z, g, *out, z.numel(), CODE=code, BLOCK=128)
    f, df, dgate = out

    module = make_activation(name)
    zr = z.clone().requires_grad_()
    ref = module(zr)
    (dref,) = torch.autograd.grad(ref, zr, g)
    # PyTorch's own ReLU6 and hardswish gradients at a NaN input are the gradient in its scalar loop
    # and 0 or NaN in its vectorized one; float32 GELU(inf) is NaN there, float64 inf (torch 2.13 CPU):
    # no semantics to match at those points
    keep = ~z.isnan() if name in ("relu6", "hardswish") else torch.ones_like(z, dtype=torch.bool)
    keep_f = ~z.isinf() if name.startswith("gelu") else torch.ones_like(z, dtype=torch.bool)
    tol = 1e-5 if dtype == torch.float32 else 1e-13
    # PyTorch's CUDA hardsigmoid / hardswish multiply by float32(1/6) (helpers.CUDA_HARDSIGMOID64)
    tol_f = max(tol, CUDA_HARDSIGMOID64) if DEVICE.type == "cuda" and name.replace("_", "") in SIXTHS else tol
    for got, want, what, bound in ((f[keep_f], ref.detach()[keep_f], "f", tol_f), (df[keep], dref[keep], "f'", tol),
                                   (mirror.activation(z, code)[keep_f], ref.detach()[keep_f], "mirror f", tol_f),
                                   (mirror.activation_grad(g, z, code)[keep], dref[keep], "mirror f'", tol)):
        fin = _same_nonfinite(got, want, f"{name} {what}")
        assert torch.allclose(got[fin], want[fin], rtol=bound, atol=bound), f"{name} {what}"
    if code in GATES:  # the derivative from the gate's output, kernel and mirror (|z| < 3 - 1e-6 here)
        inside = (z.abs() - 3).abs() > 1e-6
        for got, what in ((dgate, "gate'"), (mirror.gate_grad(g, ref.detach(), code), "mirror gate'")):
            fin = _same_nonfinite(got[inside], dref[inside], f"{name} {what}")
            assert torch.allclose(got[inside][fin], dref[inside][fin], rtol=tol, atol=tol), f"{name} {what}"


@pytest.mark.parametrize("name", NAMES)
def test_recognised_by_what_it_computes(name):
    """Names (timm's spellings too), module classes, modules and functions all give the code."""
    code = ACTIVATIONS[name]
    assert activation_code_of(name) == code
    module = make_activation(name)
    assert activation_code_of(module) == code
    if name != "gelu_tanh":  # nn.GELU() is the erf GELU
        assert activation_code_of(type(module)) == code
    assert activation_code_of(lambda t: mirror.activation(t, code)) == code


def test_unfused_activations_are_not_recognised():
    for fn in (nn.Tanh, nn.Mish, nn.LeakyReLU(0.2), nn.PReLU(), nn.ELU, nn.Softplus, "tanh", "mish"):
        assert activation_code_of(fn) is None, fn
    assert activation_code_of("swish") == activation_code_of(nn.SiLU) == ACTIVATIONS["silu"]
    assert activation_code_of("hard_swish") == ACTIVATIONS["hardswish"]


ROUTES = {"one-launch": dict(), "chunked": dict(one_launch=False, chunk_bytes=1, target_programs=1 << 12),
          "chunked-parallel-gate": dict(one_launch=False, parallel_gate=True)}
#: every hidden activation once (gates alternating), every gate with ReLU
PAIRS = [(n, GATE_NAMES[i % 2]) for i, n in enumerate(NAMES)] + [("relu", "hard_sigmoid")]


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("act,gate", PAIRS, ids=[f"{a}-{g}" for a, g in PAIRS])
def test_se_activation_matches_reference(backend, route, act, gate, device, monkeypatch):
    if backend == "torch" and route != "one-launch":
        pytest.skip("the launch routes are the Triton path's")
    for k, v in ROUTES[route].items():
        monkeypatch.setattr(config, k, v)
    C = 40
    kw = dict(rd_ratio=0.25, act_layer=act, gate_layer=gate, add_maxpool=act == "silu")
    fused = fusedattn.SE(C, **kw).to(device, torch.float64)
    x = make_x((3, C, 5, 4), torch.float64, "channels_last", device)
    check_against_reference(fused, SEModule(C, **kw), x, torch.float64, f"SE {act}/{gate} {route}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("act,gate", [("silu", "sigmoid"), ("hardswish", "hard_sigmoid")])
def test_se_activation_low_precision(backend, pipeline, act, gate, dtype, device):
    C = 32
    kw = dict(rd_ratio=0.25, act_layer=act, gate_layer=gate)
    fused = fusedattn.SE(C, **kw).to(device, dtype)
    x = make_x((2, C, 6, 5), dtype, "nchw", device)
    check_against_reference(fused, SEModule(C, **kw), x, dtype, f"SE {act}/{gate} {dtype}")


@pytest.mark.parametrize("act,gate,route", [("silu", "sigmoid", "one-launch"), ("gelu_tanh", "hard_sigmoid", "chunked"),
                                            ("hardswish", "sigmoid", "chunked-parallel-gate")])
def test_se_activation_gradcheck(triton_backend, act, gate, route, device, monkeypatch):
    """gradcheck in float64 through the Triton kernels (hard sigmoid: logits kept inside (-3, 3),
    where it is differentiable)."""
    for k, v in ROUTES[route].items():
        monkeypatch.setattr(config, k, v)
    C, RD = 4, 2
    x = make_x((2, C, 2, 2), torch.float64, "nchw", device, requires_grad=True)
    p = [0.3 * torch.randn(s, dtype=torch.float64, device=device).requires_grad_()
         for s in ((RD, C, 1, 1), (RD,), (C, RD, 1, 1), (C,))]
    assert torch.autograd.gradcheck(lambda *a: fusedattn.se(*a, mlp_act=act, gate=gate), (x, *p))


def test_se_rejects_unfused_activation_and_gate():
    """(act_layer outside the table: tests/test_errors.py)"""
    with pytest.raises(ValueError, match="gate_layer.*sigmoid or hard_sigmoid"):
        fusedattn.SE(16, gate_layer=nn.ReLU)
    with pytest.raises(ValueError, match="force_act_layer"):
        fusedattn.SqueezeExcite(16, force_act_layer=nn.Mish)
    with pytest.raises(ValueError, match="scale_activation"):
        fusedattn.SqueezeExcitation(16, 4, scale_activation=nn.Tanh)
    x = torch.randn(1, 16, 2, 2)
    w1, w2 = torch.randn(4, 16), torch.randn(16, 4)
    with pytest.raises(ValueError, match="mlp_act"):
        fusedattn.se(x, w1, None, w2, None, mlp_act="tanh")
    with pytest.raises(ValueError, match="gate"):
        fusedattn.se(x, w1, None, w2, None, gate="relu")


def test_convert_reports_unfused_activation():
    from fusedattn.reference import SqueezeExcite
    model = nn.Sequential(SqueezeExcite(16, act_layer=nn.Mish), SqueezeExcite(16, act_layer=nn.SiLU))
    converted, report = fusedattn.convert(model)
    assert [type(m).__name__ for m in converted] == ["SqueezeExcite", "SqueezeExcite"]
    assert isinstance(converted[1], fusedattn.SqueezeExcite) and not isinstance(converted[0], fusedattn.SE)
    assert len(report.left) == 1 and "act1" in report.left[0][2], str(report)
