"""PyTorch's transforms on fused blocks: what runs, and a fusedattn error naming the transform
(and what to use instead) for what does not. Was: 'no autograd formula was registered',
a setup_context message from functorch, a TorchScript compile error inside ops/validation.py."""
import pytest
import torch
from torch import nn

import fusedattn
from blocks import BLOCKS, C, fused_copy
from fusedattn.ops.unsupported import UnsupportedTransformError

# the argument checks compare traced sizes; fusedattn silences that in a user's process (see
# test_onnx.py), pytest resets the filter
pytestmark = [pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
              pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")]

#: blocks whose plain-PyTorch route (the torch backend) is ordinary autograd
PLAIN_AUTOGRAD = ["se", "se-maxpool", "se-residual", "eca", "ceca", "cbam-train", "cbam-eval"]
#: blocks that always run a fixed backward (Triton kernels, or SK's and PSA's mirrored math)
FIXED_BACKWARD = ["sk-train", "sk-eval", "psa"]


def _pair(block, device):
    ref = BLOCKS[block]().double().to(device)
    return ref, fused_copy(ref)


def _x(device, B=2):
    return torch.randn(B, C, 5, 5, dtype=torch.float64, device=device)


def _penalty(module, x):
    """A gradient penalty: d/dparams of ||d out / dx||^2 (needs double backward)."""
    x = x.detach().requires_grad_(True)
    g, = torch.autograd.grad(module(x).square().sum(), x, create_graph=True)
    return torch.autograd.grad(g.square().sum(), [p for p in module.parameters()])


def _fixed_backward_cases():
    return ([("triton", b) for b in PLAIN_AUTOGRAD + FIXED_BACKWARD] + [("torch", b) for b in FIXED_BACKWARD])


@pytest.fixture
def route(request):
    with fusedattn.use_backend(request.param):
        yield request.param


@pytest.mark.parametrize("route, block", _fixed_backward_cases(), indirect=["route"])
def test_double_backward_raises_naming_it(route, block, device):
    ref, fused = _pair(block, device)
    x = _x(device).requires_grad_(True)
    g, = torch.autograd.grad(fused(x).square().sum(), x, create_graph=True)  # first order still works
    g_ref, = torch.autograd.grad(ref(x).square().sum(), x)
    torch.testing.assert_close(g.detach(), g_ref, rtol=1e-9, atol=1e-12)
    with pytest.raises(RuntimeError, match="Double backward .* through fusedattn's .*use_backend\\('torch'\\)"):
        g.square().sum().backward()


@pytest.mark.parametrize("block", PLAIN_AUTOGRAD)
def test_double_backward_on_the_plain_route(block, device):
    ref, fused = _pair(block, device)
    x = _x(device)
    with fusedattn.use_backend("torch"):
        got = _penalty(fused, x)
    for g, w in zip(got, _penalty(ref, x)):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


TRANSFORMS = {
    "grad": lambda m, x: torch.func.grad(lambda t: m(t).square().sum())(x),
    "vmap": lambda m, x: torch.func.vmap(m)(torch.stack([x, 2 * x])),
    "jacrev": lambda m, x: torch.func.jacrev(lambda t: m(t).sum((2, 3)))(x[:1]),
    "jvp": lambda m, x: torch.func.jvp(m, (x,), (torch.ones_like(x),)),
}


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("route, block", [c for c in _fixed_backward_cases() if c[1] != "sk-train"],
                         indirect=["route"])  # sk-train: its paths' nn.BatchNorm2d refuses torch.func first
def test_torch_func_raises_naming_it(route, block, transform, device):
    _, fused = _pair(block, device)
    with pytest.raises(UnsupportedTransformError, match="torch.func transforms .* fusedattn's .* torch.autograd.grad"):
        TRANSFORMS[transform](fused, _x(device))


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("block", ["se", "eca", "cbam-eval"])
def test_torch_func_on_the_plain_route(block, transform, device):
    ref, fused = _pair(block, device)
    x = _x(device)
    with fusedattn.use_backend("torch"):
        got = TRANSFORMS[transform](fused, x)
    torch.testing.assert_close(got, TRANSFORMS[transform](ref, x), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("block", BLOCKS)
def test_jit_script_raises_naming_what_to_use(backend, block):
    _, fused = _pair(block, "cpu")
    for target in (fused, nn.Sequential(nn.Identity(), fused)):  # the block itself, or inside a model
        with pytest.raises(UnsupportedTransformError, match="torch.jit.script .* Use torch.compile.* torch.jit.trace"):
            torch.jit.script(target)


@pytest.mark.parametrize("block", BLOCKS)
def test_jit_trace_records_standard_ops(backend, block, device):
    """jit.trace records the block's plain-PyTorch math (as ONNX export does): a graph of standard
    operators, no Python or custom op, that gives the reference's result on new input."""
    ref, fused = _pair(block, device)
    traced = torch.jit.trace(fused.eval(), _x(device))
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert not {k for k in kinds if k.startswith("fusedattn::") or k == "prim::PythonOp"}, kinds
    x = _x(device, B=3)
    torch.testing.assert_close(traced(x), ref.eval()(x), rtol=1e-9, atol=1e-12)
