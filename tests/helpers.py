"""Comparison helpers: float64 references, relative norm errors, per-dtype tolerances."""
import collections
import copy

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from fusedattn.kernels.activations import ACTIVATIONS

#: float64 agreement of two routes through the same math (fused vs reference, one layout vs
#: another). On a GPU the references' cuDNN convolutions and BatchNorm sum in other orders than
#: the kernels, and training-mode BatchNorm over 2-3 values amplifies that. The first compiled run
#: (H200, 2026-11-25) saw 1e-12 to 2e-9, mostly in train mode, while BatchNorm's eps still reached
#: the kernels as fp32 (fixed since: a GPU run should tighten this); float32 arithmetic anywhere
#: would still show as 1e-7 or more.
SAME64 = 1e-8 if torch.cuda.is_available() else 1e-12

#: PyTorch's CUDA hardsigmoid and hardswish multiply by 1/6 rounded to float32 in every dtype (the
#: CPU kernels divide by 6), 3.0e-8 relative in float64; the kernels divide by 6 (H100, 2026-11-26:
#: every float64 row with a hard-sigmoid gate 2.96e-8 to 2.99e-8 off the CUDA reference).
CUDA_HARDSIGMOID64 = 4e-8
SIXTHS = ("hardsigmoid", "hardswish")
SIXTH_CODES = (ACTIVATIONS["hard_sigmoid"], ACTIVATIONS["hardswish"])


def float64_bound(reference: torch.nn.Module, device, *others: torch.nn.Module) -> float:
    """SAME64, or CUDA_HARDSIGMOID64 where ``reference`` or one of ``others`` (the fused module,
    whose unfused layers PyTorch runs: CoordAttn's gate) holds a hard sigmoid or hard swish and
    runs on CUDA."""
    def is_hard(m):   # a hard activation layer, or a fused module's code of one
        return (type(m).__name__.lower().replace("_", "") in SIXTHS
                or any(getattr(m, code, None) in SIXTH_CODES for code in ("act_code", "gate_code")))

    hard = any(is_hard(m) for module in (reference, *others) for m in module.modules())
    return CUDA_HARDSIGMOID64 if hard and torch.device(device).type == "cuda" else SAME64


#: Relative norm error allowed for a result in each dtype against a float64 reference.
TOL = {torch.float64: max(1e-10, SAME64), torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 2e-2}

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
LAYOUTS = ["nchw", "channels_last"]

#: (B, C, H, W): HW = 1, C = 1, C not a multiple of any block, odd H and W, B = 1.
ODD_SHAPES = [(2, 1, 3, 5), (1, 37, 1, 1), (3, 19, 7, 5), (2, 130, 2, 3), (1, 8, 17, 9)]


def rel_err(actual: torch.Tensor, expected: torch.Tensor, floor: float = 0.0) -> float:
    """||actual - expected|| / max(||expected||, floor) in float64 (NaN anywhere gives NaN)."""
    a, e = actual.double(), expected.double()
    if a.shape != e.shape:
        raise AssertionError(f"shape {tuple(a.shape)} != {tuple(e.shape)}")
    denom = max(e.norm().item(), floor)
    return (a - e).norm().item() / (denom if denom > 0 else 1.0)


def rounding_gap(run, module, x, here, draws: int = 4) -> float:
    """How far float64 rounding carries through ``module`` on this draw: the largest relative
    error between ``here`` (run(module, x), module as it was before) and run on copies given x
    changed by one part in 1e15 (a rounding-size change; ``draws`` independent changes: how far
    one carries varies 100x between them) and, off the CPU, on CPU copies (another summation
    order). Whole networks of training-mode BatchNorm over a batch of 2 can amplify a
    rounding-size change a billionfold: the CPU draw of seed 1925625934 moved the bundled
    SE-ResNet-50's dx by 1.7e-5 for 1e-15 of x; on an H200 timm's skresnet18 against the same model
    on the CPU, 6e-7; CI seed 1180950362 moved timm's efficientnet_b0 (train) dx by 4.2e-7 to
    4.4e-5 over six changes, and the fused model's reordered sums by 1.1e-5.
    run(module, x) -> (y, dx, {name: grad})."""
    others = []
    for draw in range(draws):
        noise = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(draw)).to(x.device)
        others.append(run(copy.deepcopy(module), (x * (1 + 1e-15 * noise)).detach()))
    if x.device.type != "cpu":
        others.append(run(copy.deepcopy(module).cpu(), x.detach().cpu()))
    return max(max([rel_err(here[0].cpu(), y.cpu()), rel_err(here[1].cpu(), dx.cpu())]
                   + [rel_err(here[2][n].cpu(), g.cpu(), 1.0) for n, g in grads.items()])
               for y, dx, grads in others)


def conv_memory_format(x: torch.Tensor) -> torch.memory_format:
    """The memory format PyTorch's convolutions give for x here: channels_last follows the input,
    except where the backend has no channels_last kernel (float64 on CUDA: contiguous)."""
    y = torch.nn.functional.conv2d(x[:1].detach(), x.new_ones(2, x.shape[1], 1, 1))
    return torch.channels_last if y.shape[2] * y.shape[3] > 1 and not y.is_contiguous() else torch.contiguous_format


def assert_close(actual, expected, dtype, what="", floor=0.0, tol=None):
    err, tol = rel_err(actual, expected, floor), max(TOL[dtype], tol or 0.0)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.0e} ({dtype})"


def randomize_batchnorm(module, affine: bool = True):
    """Non-default BatchNorm2d running statistics (and affine parameters), so that using them
    matters in eval mode and in train mode's running-stat updates. Returns module."""
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                if affine:
                    bn.weight.uniform_(0.5, 1.5)
                    bn.bias.uniform_(-0.3, 0.3)
    return module


def make_x(shape, dtype, layout, device, requires_grad=False):
    """Random N(0, 1) input in the given dtype and memory format."""
    x = torch.randn(shape, device=device).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


def grads_of(module, x, dy):
    """(y, dx, {param name: grad}) of module(x) backpropagating dy (a function of y's shape,
    dtype and device, so the same draw serves both sides)."""
    x = x.detach().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    y = module(x)
    y.backward(dy(y))
    return y.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


def assert_same_step(a, b, x, what: str, tol: float = SAME64, floor: float = 0.0):
    """a and b (same dtype) agree on x: output, input gradient and every parameter gradient (b's
    viewed in a's shape, in parameter order: another layout of the same weights), to tol (parameter
    gradients relative to max(norm, floor))."""
    drawn = {}

    def dy(y):
        drawn.setdefault("dy", torch.randn_like(y))
        return drawn["dy"]

    ya, dxa, ga = grads_of(a, x, dy)
    yb, dxb, gb = grads_of(b, x, dy)
    assert rel_err(ya, yb) < tol and rel_err(dxa, dxb) < tol, what
    assert len(ga) == len(gb), what
    for (name, g), h in zip(ga.items(), gb.values()):
        assert rel_err(g, h.view_as(g), floor) < tol, f"{what} d{name}"


class FusedattnOpCalls(TorchDispatchMode):
    """Records (op, arguments detached) of every fusedattn custom-op call under it: what autograd
    and the routes hand the ops, to replay them (opcheck, fake tensors); and in ``outputs`` what each
    call returned."""

    def __init__(self):
        super().__init__()
        self.calls, self.outputs = [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.namespace == "fusedattn":
            self.calls.append((func, tree_map(lambda a: a.detach() if isinstance(a, torch.Tensor) else a, args)))
            self.outputs.append(out)
        return out


#: Runs of the reference in the fused dtype that bound a block with unfused layers (below).
UNFUSED_DRAWS = 5


def check_against_reference(fused, reference, x, dtype, what, unfused_bound=False):
    """Forward and every gradient of ``fused`` (dtype) vs ``reference`` run in float64.

    unfused_bound: for blocks with unfused layers (SK's branch convs + BatchNorm run by PyTorch
    in ``dtype``, identically in both), each tolerance is max(2 x dtype tolerance, 2 x the error
    of ``reference`` itself run in ``dtype``): the fused block must be no worse than the reference
    in that dtype; its fused part is held to the plain tolerances by a separate test. The
    reference's own error is taken over UNFUSED_DRAWS runs (x as drawn, and x changed by a unit
    roundoff of ``dtype``), the largest: one run is one draw of how far rounding carries through
    train-mode BatchNorm over a small batch. (Seed 1468032351 gave SK's float32 train() branch-conv
    weight gradient 2.7e-5 against a reference error under 1e-5; seed 1107553157 its fc_reduce
    weight gradient 4.4e-5 against 2 x 2e-5, where the reference's error ranged 2.7e-6 to 5.0e-5
    over seeds.)
    """
    ref64 = reference.double().to(x.device)
    ref64.load_state_dict(fused.state_dict())
    same = copy.deepcopy(ref64).to(dtype) if unfused_bound else None  # state before this step
    drawn = {}

    def dy(y):  # one random upstream gradient, drawn in the fused output's dtype
        if "dy" not in drawn:
            drawn["dy"] = torch.randn_like(y)  # in y's memory format
        return drawn["dy"].to(y.dtype)

    before = copy.deepcopy(ref64) if dtype == torch.float64 and x.device.type == "cuda" else None
    y, dx, grads = grads_of(fused, x, dy)
    y64, dx64, grads64 = grads_of(ref64, x.double(), dy)
    bound64 = float64_bound(ref64, x.device, fused) if dtype == torch.float64 else 0.0
    if before is not None:   # on a GPU: also twice how far float64 rounding carries through the reference
        gap = rounding_gap(lambda m, xx: grads_of(m, xx, lambda y: dy(y).to(y.device)), before, x.double(),
                           (y64, dx64, grads64))
        bound64 = max(bound64, 2 * gap)
    tol = collections.defaultdict(lambda: bound64)
    if unfused_bound:
        tol = collections.defaultdict(lambda: 2 * TOL[dtype])
        for draw in range(UNFUSED_DRAWS):
            noise = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(draw))
            xd = x if draw == 0 else torch.empty_like(x).copy_(x.double() * (1 + torch.finfo(dtype).eps
                                                                               * noise.to(x.device)))
            ys, dxs, gs = grads_of(copy.deepcopy(same), xd, dy)
            errs = dict(y=rel_err(ys, y64), dx=rel_err(dxs, dx64), **{n: rel_err(gs[n], grads64[n], 1.0) for n in gs})
            for k, e in errs.items():
                tol[k] = max(tol[k], 2 * e)
    assert y.dtype == x.dtype and dx.dtype == x.dtype
    assert_close(y, y64, dtype, f"{what} y", tol=tol["y"])
    assert_close(dx, dx64, dtype, f"{what} dx", tol=tol["dx"])
    assert grads.keys() == grads64.keys()
    for name in grads:
        assert grads[name] is not None, f"{what}: no gradient for {name}"
        # parameter gradients are sums over the batch that can cancel to ~0 (a BatchNorm bias's,
        # an ECA tap's with C=1): their rounding error scales with the O(1) terms, not the sum,
        # so the error is taken relative to max(||expected||, 1)
        assert_close(grads[name], grads64[name], dtype, f"{what} d{name}", floor=1.0, tol=tol[name])
    return y, dx
