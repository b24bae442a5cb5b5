"""SimAM as one opaque op:  y = x * sigmoid((x - mu)^2 / (4 (var + e_lambda)) + 0.5)
(mu, var over H*W per sample and channel, var with HW - 1 in the denominator)

``fusedattn::simam_forward`` / ``fusedattn::simam_backward``: CUDA tensors run the Triton kernels
(fusedattn.kernels.simam: one launch each way); CPU tensors the plain-PyTorch math below.
"""
import torch
from torch import Tensor

from ..backend import uses_triton
from ..kernels.layout import suggested_memory_format
from ..kernels.simam import simam_backward, simam_forward
from .registration import define_block
from .validation import acc_dtype, check_activation


# ---- plain-PyTorch path (CPU) -------------------------------------------------------

def _gate(dev, rinv):
    """s = sigmoid((x - mu)^2 rinv + 0.5)."""
    return torch.sigmoid(dev * dev * rinv + 0.5)


def simam_forward_torch(x, e_lambda):
    xf = x.to(acc_dtype(x))
    u = xf - xf[:, :, :1, :1]          # the kernels' shifted data: exact differences far from 0
    centre = u.mean((2, 3), keepdim=True)
    dev = u - centre
    n = x.shape[2] * x.shape[3] - 1
    var = (dev * dev).sum((2, 3), keepdim=True) / n if n > 0 else torch.full_like(centre, float("nan"))
    rinv = 1.0 / (4.0 * (var + e_lambda))
    y = (xf * _gate(dev, rinv)).to(x.dtype)
    return y.contiguous(memory_format=suggested_memory_format(x)), centre.flatten(1), rinv.flatten(1)


def simam_backward_torch(dy, x, centre, rinv):
    """The kernels' formula (kernels/simam.py) in PyTorch."""
    N = x.shape[2] * x.shape[3]
    xf, g = x.to(centre.dtype), dy.to(centre.dtype)
    r = rinv[:, :, None, None]
    dev = (xf - xf[:, :, :1, :1]) - centre[:, :, None, None]
    s = _gate(dev, r)
    q = g * xf * s * (1 - s)
    k_var = 4 * r * r * (q * dev * dev).sum((2, 3), keepdim=True) / (N - 1.0 if N > 1 else 0.0)
    k_mean = 2 * r * (q * dev).sum((2, 3), keepdim=True) / N
    dx = g * s + 2 * dev * (q * r - k_var) - k_mean
    return dx.to(x.dtype).contiguous(memory_format=suggested_memory_format(x))


def simam_math(x, e_lambda):
    """Eager CPU math (float32; float64 for float64 x): the kernels' shifted data (exact differences far
    from 0), squares as products (this CPU build's pow is 30 times slower than a mul), the constants
    folded: r = (HW - 1) / 4 / (sum (x - mu)^2 + (HW - 1) e_lambda), e = 0.5 + (x - mu)^2 r. Under
    autograd as many ATen ops as the reference and none of its pow; without gradients in place
    (one x-sized buffer, not six)."""
    if x.dtype not in (torch.float32, torch.float64):   # float16 / bfloat16 (the functional op):
        # float32 math, as the kernels
        return (simam_math(x.float(), e_lambda)[0].to(x.dtype),)
    B, C, H, W = x.shape
    n = H * W - 1
    scale = 0.25 * n if n else float("nan")   # n = 0: 0 / 0 variance, NaN as the reference
    # x[b, c, 0, 0] as a [B, C, 1, 1] view (one op); x - mu does not depend on it: no gradient
    shift = x.as_strided((B, C, 1, 1), x.stride()).detach()
    if torch._C._is_tracing() or (torch.is_grad_enabled() and x.requires_grad):   # a trace: one graph
        u = x - shift
        dev = u - u.mean((2, 3), keepdim=True)
        d = dev * dev
        rcp = (d.sum((2, 3), keepdim=True) + n * e_lambda).reciprocal()
        return (x * torch.sigmoid(torch.addcmul(_half(x), d, rcp, value=scale)),)
    d = x - shift
    d.sub_(d.mean((2, 3), keepdim=True)).mul_(d)
    rcp = d.sum((2, 3), keepdim=True).add_(n * e_lambda).reciprocal_()
    return (torch.addcmul(_half(x), d, rcp, value=scale, out=d).sigmoid_().mul_(x),)


#: 0.5 as a 0-dim tensor per (dtype, device): addcmul's first operand, made once (CUDA's addcmul
#: takes no CPU scalar tensor there; the plain path runs on CUDA under backend 'torch')
_HALF = {(dt, torch.device("cpu")): torch.tensor(0.5, dtype=dt) for dt in (torch.float32, torch.float64)}


def _half(x):
    half = _HALF.get((x.dtype, x.device))
    if half is None:
        half = _HALF[x.dtype, x.device] = torch.tensor(0.5, dtype=x.dtype, device=x.device)
    return half


# ---- custom ops ----------------------------------------------------------------------

def simam_forward_impl(x: Tensor, e_lambda: float) -> tuple[Tensor, Tensor, Tensor]:
    """(y, centre [B, C] = mean_hw(x - x[:, :, 0, 0]), rinv [B, C] = 1 / (4 (var + e_lambda)))."""
    return (simam_forward if uses_triton(x) else simam_forward_torch)(x, e_lambda)


def simam_backward_impl(dy: Tensor, x: Tensor, centre: Tensor, rinv: Tensor) -> tuple[Tensor]:
    """(dx,)"""
    return ((simam_backward if uses_triton(x) else simam_backward_torch)(dy, x, centre, rinv),)


def _setup_context(ctx, inputs, output):
    x, _ = inputs
    _, centre, rinv = output
    ctx.save_for_backward(x, centre, rinv)


def _gradients(ctx, run, dy, *_unused):
    x, centre, rinv = ctx.saved_tensors
    return run(dy, x, centre, rinv)[0], None


simam_block = define_block("simam", simam_forward_impl, simam_backward_impl, _setup_context, _gradients,
                           simam_forward_torch, simam_math)


# ---- functional API ------------------------------------------------------------------

def simam(x: Tensor, e_lambda: float = 1e-4) -> Tensor:
    """SimAM on x [B, C, H, W]: x * sigmoid((x - mu)^2 / (4 (var + e_lambda)) + 0.5), mu and var
    (HW - 1 in the denominator) over H*W per sample and channel. H*W = 1 gives NaN, as the
    reference (0 / 0 variance)."""
    check_activation(x)
    e_lambda = check_e_lambda(e_lambda)
    return simam_block(x, e_lambda)


def check_e_lambda(e_lambda) -> float:
    if isinstance(e_lambda, bool) or not isinstance(e_lambda, (int, float)):
        raise TypeError(f"e_lambda must be a float, got {type(e_lambda).__name__}")
    if not 0 <= e_lambda < float("inf"):
        raise ValueError(f"e_lambda must be a finite number >= 0, got {e_lambda}")
    return float(e_lambda)
