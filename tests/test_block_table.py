"""The shared battery, run on every row of the block table (tests/blocks.py): the fused module
against its reference per dtype and layout on an odd shape, gradcheck in float64 through the
Triton path, torch.compile(fullgraph=True) against eager, state_dict keys and strict loading both
ways, bitwise determinism, and the ops' fake outputs (shapes, dtypes, strides) against the Triton
path's real ones on every kind of strided input. A block's own suite (test_se.py, test_cbam.py, ...) adds its
options, layouts and launch plans."""
import copy

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._pytree import tree_map

from blocks import BLOCKS, fused_copy
from fusedattn.ops import dispatch
from helpers import (DTYPES, LAYOUTS, SAME64, FusedattnOpCalls, assert_same_step, check_against_reference,
                     conv_memory_format, float64_bound, grads_of, make_x, rel_err)

ROWS = list(BLOCKS)
SHAPE = (3, 16, 5, 7)   # C = 16 (the rows' default); odd H, W; B = 3 (BatchNorm statistics over a batch)


def _fresh(name, device, dtype=torch.float64):
    """(reference, fused copy) of a row, with random weights (the default init leaves some gates
    near 0.5 and the spatial logits near 0, which would hide errors); rows with unfused branch
    convs keep their init (random weights there only make PyTorch's own convs and BatchNorm in the
    test dtype noisier: the bound of check_against_reference)."""
    ref = BLOCKS[name]()
    if not BLOCKS[name].unfused:
        with torch.no_grad():
            for p in ref.parameters():
                p.normal_(0.0, 0.5)
    return ref, fused_copy(ref).to(device, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ROWS)
def test_row_matches_reference(backend, name, dtype, layout, device):
    ref, fused = _fresh(name, device, dtype)
    x = make_x(SHAPE, dtype, layout, device)
    y, dx = check_against_reference(fused, ref, x, dtype, f"{name} {dtype} {layout}",
                                    unfused_bound=BLOCKS[name].unfused and dtype != torch.float64)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    # y: PyTorch's branch convs set it (CUDA float64: NCHW); dx: x.grad follows x's layout
    y_fmt = conv_memory_format(x) if BLOCKS[name].unfused and layout == "channels_last" else fmt
    assert y.is_contiguous(memory_format=y_fmt) and dx.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("name", ROWS)
def test_row_gradcheck_float64(triton_backend, name, device, deterministic_cudnn):
    """Input and every parameter, through the Triton kernels (a random projection of the Jacobian:
    fast_mode, to bound CI time; the blocks' own suites run full Jacobians)."""
    _, fused = _fresh(name, device)
    x = make_x((2, 16, 3, 4), torch.float64, "channels_last", device, requires_grad=True)
    names = [n for n, _ in fused.named_parameters()]

    def fn(x, *params):
        return torch.func.functional_call(fused, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *fused.parameters()), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("name", ROWS)
def test_row_compiles_fullgraph(triton_backend, name, device):
    """torch.compile(fullgraph=True) traces the block (fake impls, registered autograd) and gives
    eager's output and gradients (float64; the graph runs the same Triton kernels)."""
    torch._dynamo.reset()
    _, fused = _fresh(name, device)
    compiled = torch.compile(copy.deepcopy(fused), fullgraph=True, backend="aot_eager")
    x = make_x(SHAPE, torch.float64, "channels_last", device)
    dy = torch.randn(fused(x).shape, dtype=torch.float64, device=device)
    y, dx, grads = grads_of(fused, x, lambda y: dy)
    yc, dxc, gradsc = grads_of(compiled, x, lambda y: dy)
    assert rel_err(yc, y) <= SAME64 and rel_err(dxc, dx) <= SAME64
    for n in grads:
        assert rel_err(gradsc[f"_orig_mod.{n}"], grads[n], 1.0) <= SAME64, n


@pytest.mark.parametrize("name", ROWS)
def test_row_state_dict(name):
    """The fused module saves the reference's keys and shapes; each loads the other's strictly and
    then computes the same."""
    ref, fused = _fresh(name, "cpu")
    ref = ref.double()
    ours, theirs = fused.state_dict(), ref.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    other = BLOCKS[name]().double()
    other.load_state_dict(ours)   # strict
    again = fused_copy(BLOCKS[name]()).double()
    again.load_state_dict(theirs)   # strict
    x = make_x(SHAPE, torch.float64, "nchw", "cpu")
    with torch.no_grad():
        assert rel_err(again.eval()(x), other.eval()(x)) <= SAME64


@pytest.mark.parametrize("name", ROWS)
def test_row_deterministic(triton_backend, name, device, deterministic_cudnn):
    """Two forward + backward calls give bitwise the same output and gradients (no atomics; SK's and
    PSA's branch convs, PyTorch's, with cuDNN's deterministic algorithms)."""
    _, fused = _fresh(name, device, torch.float32)
    x = make_x(SHAPE, torch.float32, "channels_last", device)
    dy = torch.randn(fused(x).shape, device=device)
    first, second = (grads_of(copy.deepcopy(fused), x, lambda y: dy) for _ in range(2))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    for n in first[2]:
        assert torch.equal(first[2][n], second[2][n]), n


#: strided views of [B, C, H, W] the ops meet (make(B, C, H, W) -> x)
VIEWS = {
    "contiguous": lambda *s: torch.randn(*s),
    "channels_last": lambda *s: torch.randn(*s).to(memory_format=torch.channels_last),
    "channel-slice": lambda B, C, H, W: torch.randn(B, C + 3, H, W)[:, 2:2 + C],
    "strided-w": lambda B, C, H, W: torch.randn(B, C, H, 2 * W + 1)[:, :, :, 1::2],
    "transposed-hw": lambda B, C, H, W: torch.randn(B, C, W, H).transpose(2, 3),
    "expanded-batch": lambda B, C, H, W: torch.randn(1, C, H, W).expand(B, C, H, W),
}


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("name", ROWS)
def test_row_fake_outputs_are_the_kernels(triton_backend, name, view, device, monkeypatch):
    """Through the custom ops (the route torch.compile takes), forward and backward: every output of
    the Triton path has the shape, dtype and strides its fake impl (the plain-PyTorch path on fake
    tensors, ops/registration.py) gives for the same arguments."""
    monkeypatch.setattr(dispatch.Block, "__call__", lambda self, *args: self.result(self.op(*args)))
    _, fused = _fresh(name, device, torch.float32)
    x = VIEWS[view](*SHAPE).to(device).requires_grad_(True)
    with FusedattnOpCalls() as record:
        y = fused(x)
        y.backward(torch.randn_like(y))
    assert len(record.calls) == 2, [str(f) for f, _ in record.calls]   # the forward op and the backward op
    for (op, args), real in zip(record.calls, record.outputs):
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        with mode:
            fake = op(*tree_map(lambda a: mode.from_tensor(a) if isinstance(a, torch.Tensor) else a, args))
        assert len(real) == len(fake)
        for i, (r, f) in enumerate(zip(real, fake)):
            assert (r.shape, r.dtype) == (f.shape, f.dtype), (str(op), i)
            assert r.numel() <= 1 or r.stride() == f.stride(), (str(op), i, r.stride(), f.stride())


class _Doubled(torch.nn.Module):
    """A parametrization: the layer's weight is twice the stored one."""

    def forward(self, w):
        return 2.0 * w


@pytest.mark.parametrize("name", ROWS)
def test_row_parametrized_weights(backend, name, device):
    """Weights behind torch.nn.utils.parametrize (weight norm, spectral norm, ...) are what the
    layers compute with: the fused module reads its parameters from the layers' parameter dicts on
    the call path (fusedattn/modules/layers.py) and must take the parametrized weight where that dict
    has no plain entry. Output, dx and the stored weights' gradients equal the reference's (float64;
    eval mode: a bias just before a train-mode BatchNorm gets a gradient of rounding size only)."""
    from torch.nn.utils import parametrize

    ref, fused = _fresh(name, device)
    ref, fused = ref.to(device, torch.float64).eval(), fused.eval()
    for module in (ref, fused):
        for layer in list(module.modules()):
            if isinstance(layer, (torch.nn.Conv1d, torch.nn.Conv2d)):
                parametrize.register_parametrization(layer, "weight", _Doubled())
    # (floor 1: PSA's fc2 bias moves all of a softmax's logits alike: a zero gradient)
    # (float64_bound: PyTorch's CUDA hardsigmoid / hardswish multiply by a float32 1/6)
    assert_same_step(fused, ref, make_x(SHAPE, torch.float64, "channels_last", device), name,
                     tol=float64_bound(ref, device, fused), floor=1.0)
