"""Measurement pieces shared by ``python -m fusedattn`` and the bench suite (bench/).

GPU times are medians of CUDA-event timings (``triton.testing.do_bench``, which also
flushes L2 between runs); CPU times are medians of host-clock timings.
"""
import statistics
import time
from typing import Callable

import torch
from torch import nn

from .modules import CBAM, ECA, PSA, SE
from .ops import psa_attention
from .reference import CbamModule, EcaModule, PSAModule, SEModule, SEWeightModule, psa_attention_reference

class PSATail(nn.Module):
    """PSA's attention tail alone, for benchmarks: x [B, 4*C4, H, W] is read as the four split
    tensors (channel views, no copy) that the branch convs would produce."""

    def __init__(self, channels: int, fused: bool = False):
        super().__init__()
        self.se = SEWeightModule(channels // 4)
        self.fused = fused

    def forward(self, x):
        splits = list(x.chunk(4, dim=1))
        if self.fused:
            return psa_attention(splits, self.se.fc1.weight, self.se.fc1.bias, self.se.fc2.weight, self.se.fc2.bias)
        return psa_attention_reference(splits, self.se)


def _fused_tail(ref: PSATail) -> PSATail:
    new = PSATail(4 * ref.se.fc1.in_channels, fused=True).to(next(ref.parameters()).device)
    new.load_state_dict(ref.state_dict())
    return new.to(next(ref.parameters()).dtype)


#: block name -> (reference module for C channels, fused-from-reference converter)
BLOCKS: dict[str, tuple[Callable[[int], nn.Module], Callable[[nn.Module], nn.Module]]] = {
    "se": (lambda c: SEModule(c), SE.from_module),
    "eca": (lambda c: EcaModule(c), ECA.from_module),
    "cbam": (lambda c: CbamModule(c), CBAM.from_module),
    "psa": (lambda c: PSAModule(c, c), PSA.from_module),  # whole block: convs + attention tail
    "psa_tail": (lambda c: PSATail(c), _fused_tail),       # the fused part alone
}

PROVIDERS = ("eager", "compiled", "fused")


def make_modules(block: str, channels: int, device, dtype, providers=PROVIDERS) -> dict[str, nn.Module]:
    """The reference block (eager), torch.compile of it, and the fused block with its weights."""
    make_ref, to_fused = BLOCKS[block]
    ref = make_ref(channels).to(device=device, dtype=dtype)
    out = {}
    for p in providers:
        if p == "eager":
            out[p] = ref
        elif p == "compiled":
            out[p] = torch.compile(ref)
        elif p == "fused":
            out[p] = to_fused(ref)
    return out


def time_ms(fn: Callable[[], object], device: torch.device, grad_to_none=None, reps: int = 20) -> float:
    """Median time of fn() in milliseconds."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none,
                                             return_mode="median"))
    fn()
    times = []
    for _ in range(reps):
        for t in grad_to_none or ():
            t.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def saved_tensor_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the unique storages autograd's saved-tensor hooks see in one forward of
    module(x), parameters and buffers left out (they exist anyway); x's storage counted."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    for t in list(module.parameters()) + list(module.buffers()):
        storages.pop(t.untyped_storage().data_ptr(), None)
    return sum(storages.values())


def saved_for_backward_bytes(module: nn.Module, x: torch.Tensor) -> int | None:
    """Bytes of the tensors autograd keeps from one forward of module(x) for backward,
    beyond x itself and the module's parameters.

    CUDA: growth of allocated memory over the forward, less the output (covers compiled
    graphs; x and the parameters are allocated before and not counted). CPU:
    saved_tensor_bytes less x's (None for compiled modules, whose internals hooks miss).
    """
    x = x.detach().requires_grad_(True)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        y = module(x)
        torch.cuda.synchronize()
        saved = torch.cuda.memory_allocated() - before - y.untyped_storage().nbytes()
        del y
        return max(saved, 0)
    if hasattr(module, "_orig_mod"):
        return None
    return saved_tensor_bytes(module, x) - x.untyped_storage().nbytes()


def make_input(shape, dtype, layout: str, device, requires_grad=False) -> torch.Tensor:
    x = torch.randn(shape, device=device, dtype=dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


def forward_fn(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run():
        with torch.no_grad():
            return module(x)
    return run


def forward_backward_fn(module: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> Callable[[], object]:
    def run():
        module(x).backward(dy)
    return run
