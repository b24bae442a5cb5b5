"""ReLU, its gradient and the maximum with PyTorch's NaN semantics, for every kernel.

Triton's ``tl.maximum`` (by default) and ``tl.max`` are IEEE maxNum: max(NaN, 0) = 0 on the GPU
(and ``np.fmax`` / ``np.nanmax`` under the interpreter), where torch.relu, torch.amax and softmax
give NaN. And ``h > 0`` as ReLU's gradient mask drops a NaN gradient that PyTorch passes
(threshold_backward zeroes where the output is <= 0, which NaN is not). A kernel that turned a
NaN into a finite number would hide a diverging run, so every ReLU and maximum goes through here.
"""
import triton
import triton.language as tl


@triton.jit
def relu(x):
    """max(x, 0), NaN kept."""
    return tl.maximum(x, 0.0, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def relu_grad(grad, h):
    """grad where relu's input (or output) h is not <= 0 (NaN passes, as in PyTorch), else 0."""
    return tl.where(h <= 0.0, 0.0, grad)


@triton.jit
def maximum(a, b):
    """Elementwise max; NaN if either is NaN."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def max_along(x, axis: tl.constexpr):
    """x's maximum along axis; NaN where any element is NaN (tl.max would skip it). A second,
    integer reduction rather than tl.reduce with ``maximum`` as the combine function: the same on
    a GPU, but Triton's interpreter runs a custom combine element by element in Python (233 ms
    against 2.5 ms for a [64, 128] tile)."""
    has_nan = tl.max((x != x).to(tl.int32), axis=axis) > 0
    return tl.where(has_nan, float("nan"), tl.max(x, axis=axis))


@triton.jit
def max_grad(coef, at_max):
    """A max pool's gradient coef (already divided by the ties) where x is at the maximum, else 0,
    as a product (PyTorch's amax backward is grad / count * mask): a NaN or infinite coef gives NaN
    everywhere, not only at the maximum."""
    return coef * at_max.to(coef.dtype)
