"""The routes a block call can take (fusedattn/ops/dispatch.py) agree with each other:

- the eager ``torch.autograd.Function`` and the custom op run the same impl and backward, so
  their outputs and gradients are identical, bit for bit (Triton and torch backends);
- the lean CPU math (eager mode on CPU) matches the op's mirrored plain-PyTorch path in float64
  to rounding, outputs and every gradient, and keeps its precision under CPU autocast.
"""
import pytest
import torch

import fusedattn
from fusedattn.ops.cbam import cbam_block
from fusedattn.ops.eca import eca_block
from fusedattn.ops.psa import psa_block
from fusedattn.ops.se import se_block
from fusedattn.ops.sk import sk_block
from fusedattn.reference import CbamModule, EcaModule, SEModule

from helpers import SAME64, assert_close, make_x, randomize_batchnorm


def _p(*shape):
    return torch.randn(*shape, dtype=torch.float64).requires_grad_()


def _cases(B=2, C=16, H=5, W=3):
    """(name, block, argument list) per op; x (or the list of branches) first."""
    x = torch.randn(B, C, H, W, dtype=torch.float64)
    splits = [torch.randn(B, C, H, W, dtype=torch.float64) for _ in range(3)]
    A = 8
    return [
        ("se", se_block, (x, _p(4, C, 1, 1), _p(4), _p(C, 4, 1, 1), _p(C), True, None, 0, 1, 8)),
        ("se_hardswish", se_block, (x, _p(4, C, 1, 1), _p(4), _p(C, 4, 1, 1), _p(C), False, None, 0, 7, 9)),
        ("se_residual", se_block, (x, _p(4, C, 1, 1), _p(4), _p(C, 4, 1, 1), _p(C), False,
                                   torch.randn_like(x), 2, 1, 8)),
        ("eca", eca_block, (x, _p(1, 1, 3), _p(1), True, None, 0)),
        ("cbam", cbam_block, (x, _p(4, C, 1, 1), None, _p(C, 4, 1, 1), None, _p(1, 2, 3, 3), _p(1),
                              _p(1), _p(1), None, None, True, True, 1e-5, False)),
        ("psa", psa_block, (splits, _p(4, C, 1, 1), _p(4), _p(C, 4, 1, 1), _p(C))),
        ("sk", sk_block, (splits, _p(A, C, 1, 1), _p(3 * C, A, 1, 1), _p(A).detach().uniform_(0.5, 1.5)
                          .requires_grad_(), _p(A), None, None, True, 1e-5)),
    ]


def _inputs_requiring_grad(args):
    """Fresh leaves for x (or the branches) and every parameter, in argument order."""
    out = []
    for a in args:
        if isinstance(a, list):
            out.append([t.detach().clone().requires_grad_() for t in a])
        elif isinstance(a, torch.Tensor):
            out.append(a.detach().clone().requires_grad_())
        else:
            out.append(a)
    return out


def _leaves(args):
    flat = []
    for a in args:
        flat += a if isinstance(a, list) else [a] if isinstance(a, torch.Tensor) else []
    return flat


def _grads(run, args, seed):
    args = _inputs_requiring_grad(args)
    y = run(*args)
    y = y[0] if isinstance(y, tuple) else y
    dy = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(seed)).to(y.device)
    grads = torch.autograd.grad(y, _leaves(args), dy, allow_unused=True)
    return y, grads


@pytest.mark.parametrize("name", ["se", "se_residual", "eca", "cbam", "psa", "sk"])
def test_eager_function_equals_custom_op(backend, name, device):
    """Bitwise: the eager autograd.Function route and the custom op (what torch.compile sees)."""
    with torch.device(device):
        _, block, args = next(c for c in _cases() if c[0] == name)
    y_eager, g_eager = _grads(lambda *a: block.result(block.eager(*a)), args, 1)
    y_op, g_op = _grads(lambda *a: block.result(block.op(*a)), args, 1)
    assert torch.equal(y_eager, y_op)
    for a, b in zip(g_eager, g_op):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("name", ["se", "se_residual", "eca", "cbam"])
def test_lean_cpu_math_matches_the_op(name):
    """Float64: the lean CPU math (eager mode on CPU) against the op's plain-PyTorch path."""
    _, block, args = next(c for c in _cases() if c[0] == name)
    y_lean, g_lean = _grads(lambda *a: block.cpu_math(*a)[0], args, 2)
    with fusedattn.use_backend("torch"):
        y_op, g_op = _grads(lambda *a: block.result(block.op(*a)), args, 2)
    assert_close(y_lean, y_op, torch.float64, "y", tol=1e-13)
    for i, (a, b) in enumerate(zip(g_lean, g_op)):
        assert (a is None) == (b is None), i
        if a is not None:
            assert_close(a, b, torch.float64, f"grad {i}", floor=1.0, tol=1e-12)  # floor: a bias before BN has zero gradient


@pytest.mark.parametrize("make_ref, to_fused", [
    (lambda: SEModule(32, add_maxpool=True), fusedattn.SE.from_module),
    (lambda: EcaModule(32), fusedattn.ECA.from_module),
    (lambda: randomize_batchnorm(CbamModule(32, rd_ratio=1 / 4)), fusedattn.CBAM.from_module),
    (lambda: randomize_batchnorm(CbamModule(32, rd_ratio=1 / 4)).eval(), fusedattn.CBAM.from_module),
])
def test_module_on_cpu_route_matches_reference(make_ref, to_fused):
    """A fused module on CPU tensors (the lean route) against the float64 reference: output,
    input and parameter gradients, and CBAM's BatchNorm running statistics."""
    ref = make_ref().double()
    fused = to_fused(ref)
    with fusedattn.use_backend("auto"):
        x = make_x((3, 32, 6, 5), torch.float64, "channels_last", "cpu", requires_grad=True)
        y, y_ref = fused(x), ref(x)
        assert y.is_contiguous(memory_format=torch.channels_last)
        dy = torch.randn_like(y_ref)
        g = torch.autograd.grad(y, [x, *fused.parameters()], dy)
        g_ref = torch.autograd.grad(y_ref, [x, *ref.parameters()], dy)
    assert_close(y, y_ref, torch.float64, "y")
    for a, b in zip(g, g_ref):
        assert_close(a, b, torch.float64, "grad")
    for (n, a), b in zip(fused.named_buffers(), ref.buffers()):
        assert torch.allclose(a.double(), b.double(), rtol=SAME64, atol=0), n


@pytest.mark.parametrize("make", [lambda: fusedattn.SE(32), lambda: fusedattn.ECA(32), lambda: fusedattn.CBAM(32)])
def test_cpu_route_keeps_precision_under_autocast(make):
    """Under CPU autocast the block computes as without it (float32 in, float32 out)."""
    m = make()
    x = torch.randn(2, 32, 5, 5)
    with fusedattn.use_backend("auto"):
        expected = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-7)
