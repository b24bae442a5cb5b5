"""The fused residual epilogue  out = act(attn(x) + shortcut)  of SE and ECA against the float64
reference (the timm block, then an add and the activation in PyTorch)."""
import pytest
import torch
import torch.nn.functional as F

import fusedattn
from fusedattn.reference import EcaModule, SEModule
from helpers import DTYPES, LAYOUTS, assert_close, make_x

ACTS = {None: lambda t: t, "relu": F.relu, "silu": F.silu}


def _blocks(block, C):
    if block == "se":
        ref = SEModule(C, rd_ratio=0.25)
        return ref, fusedattn.SE.from_module(ref)
    ref = EcaModule(kernel_size=3)
    return ref, fusedattn.ECA.from_module(ref)


def _run(module, x, shortcut, dy, act, fused):
    x = x.detach().requires_grad_(True)
    shortcut = shortcut.detach().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    out = module(x, shortcut=shortcut, act=act) if fused else ACTS[act](module(x) + shortcut)
    out.backward(dy.to(out.dtype))
    return out.detach(), x.grad, shortcut.grad, [p.grad for p in module.parameters()]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("act", [None, "relu", "silu"])
@pytest.mark.parametrize("block", ["se", "eca"])
def test_epilogue_matches_reference(backend, pipeline, block, act, dtype, layout, device):
    C = 24
    ref, fused = _blocks(block, C)
    fused = fused.to(device, dtype)
    ref64 = ref.to(device).double()
    ref64.load_state_dict(fused.state_dict())  # the same (dtype-rounded) weights on both sides
    x = make_x((3, C, 5, 7), dtype, layout, device)
    shortcut = make_x((3, C, 5, 7), dtype, layout, device)
    if act == "relu":  # keep x * gate + shortcut off ReLU's kink: a sign there depends on rounding
        with torch.no_grad():
            near = (ref64(x.double()) + shortcut.double()).abs() < 1e-2
            shortcut = torch.where(near, shortcut + 0.05, shortcut)
    dy = torch.randn(3, C, 5, 7, device=device).to(dtype)  # the same values reach both sides
    got = _run(fused, x, shortcut, dy, act, fused=True)
    want = _run(ref64, x.double(), shortcut.double(), dy.double(), act, fused=False)
    what = f"{block} act={act} {dtype} {layout}"
    for name, g, w in zip(["out", "dx", "dshortcut"], got[:3], want[:3]):
        assert g.dtype == dtype, f"{what} {name} dtype"
        assert_close(g, w, dtype, f"{what} {name}")
    for g, w in zip(got[3], want[3]):
        assert_close(g, w, dtype, f"{what} dparam", floor=1.0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert got[0].is_contiguous(memory_format=fmt) and got[1].is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("act", ["relu", "silu", None])
@pytest.mark.parametrize("block", ["se", "eca"])
def test_epilogue_gradcheck_float64(triton_backend, block, act, device):
    C = 6
    x = make_x((2, C, 3, 2), torch.float64, "nchw", device, requires_grad=True)
    shortcut = make_x((2, C, 3, 2), torch.float64, "nchw", device, requires_grad=True)
    f64 = dict(dtype=torch.float64, device=device, requires_grad=True)
    if block == "se":
        params = (torch.randn(3, C, 1, 1, **f64), torch.randn(3, **f64), torch.randn(C, 3, 1, 1, **f64),
                  torch.randn(C, **f64))

        def fn(x, s, *p):
            return fusedattn.se(x, *p, shortcut=s, act=act)
    else:
        params = (torch.randn(1, 1, 3, **f64),)

        def fn(x, s, w):
            return fusedattn.eca(x, w, shortcut=s, act=act)
    full = (block, act) == ("se", "relu")  # one full Jacobian; the rest in gradcheck's fast mode
    assert torch.autograd.gradcheck(fn, (x, shortcut, *params), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=not full)


def test_epilogue_without_shortcut_and_errors(backend, device):
    """act alone (no shortcut) works; bad shortcuts and activations raise naming the argument."""
    se = fusedattn.SE(8, rd_channels=4).to(device)
    x = make_x((2, 8, 3, 3), torch.float32, "nchw", device)
    torch.testing.assert_close(se(x, act="relu"), F.relu(se(x)))
    with pytest.raises(ValueError, match="shortcut must have shape"):
        se(x, shortcut=torch.randn(2, 8, 3, 2, device=device))
    with pytest.raises(TypeError, match="shortcut must have x's dtype"):
        se(x, shortcut=torch.randn(2, 8, 3, 3, device=device, dtype=torch.float64))
    with pytest.raises(ValueError, match="act must be one of"):
        se(x, shortcut=x, act="gelu")
