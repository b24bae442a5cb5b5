"""What fusedattn does not support, as errors that name the transform and what to use instead.

Where a call runs the Triton kernels (or the mirrored backward of SK and PSA on CPU), its backward
is a fixed computation, not PyTorch autograd: it cannot be differentiated again, and functorch's
vmap and forward mode cannot look inside it. The plain-PyTorch route of SE, ECA and CBAM
(``fusedattn.use_backend("torch")``) is ordinary autograd and supports them all.
"""
import torch
from torch._C import _functions


class UnsupportedTransformError(RuntimeError):
    """A PyTorch transform the route of this call does not support."""


NOT_AUTOGRAD = ("its Triton kernels (and the mirrored backward of SK and PSA) are a fixed computation, "
                "not PyTorch autograd")


def unsupported(transform: str, block: str, instead: str, why: str = NOT_AUTOGRAD) -> UnsupportedTransformError:
    return UnsupportedTransformError(f"{transform} through fusedattn's {block} is not supported: {why}. {instead}")


DOUBLE_BACKWARD = ("For gradient penalties and Hessians use fusedattn.use_backend('torch') with SE, ECA and "
                   "CBAM (plain autograd there), or the fusedattn.reference modules.")
FUNCTORCH = ("Use torch.autograd.grad for gradients; for vmap fold the mapped dimension into the batch "
             "(x.flatten(0, 1): every block but the training-mode BatchNorm of CBAM and SK treats samples "
             "independently) or loop in Python; or run SE, ECA and CBAM with fusedattn.use_backend('torch') "
             "(plain autograd, every transform works there).")


def once_differentiable(block: str, backward):
    """backward(ctx, *grads) run without building a graph; its results, when a graph is being
    built (create_graph=True), raise ``unsupported("double backward", ...)`` if differentiated
    (what torch.autograd.function.once_differentiable does, with fusedattn's message)."""
    message = str(unsupported("Double backward (create_graph=True, then a gradient of the gradient)",
                              block, DOUBLE_BACKWARD)).encode()

    def wrapper(ctx, *grads):
        if not torch.is_grad_enabled():   # the usual backward (no create_graph): nothing to guard
            return backward(ctx, *grads)
        with torch.no_grad():
            outputs = backward(ctx, *grads)
        if not any(isinstance(g, torch.Tensor) and g.requires_grad for g in grads):
            return outputs
        delayed = _functions.DelayedError(message, len(outputs))
        return delayed(*[None if t is None else t.detach().requires_grad_() for t in outputs])

    return wrapper


class NotScriptable:
    """Mixin for the fused modules: torch.jit.script (of the module or of a model holding it)
    raises fusedattn's error instead of failing deep inside the argument checks."""

    def __prepare_scriptable__(self):
        raise unsupported("torch.jit.script", type(self).__name__,
                          "Use torch.compile(model) (one opaque op per block), or torch.jit.trace, "
                          "torch.export or torch.onnx.export for a graph.",
                          why="its forward is Python (argument checks, kernel launchers, custom ops) "
                              "that TorchScript does not compile")
