"""Measurement pieces shared by ``python -m fusedattn`` and the bench suite (bench/).

GPU times are medians of CUDA-event timings (``triton.testing.do_bench``, which also
flushes L2 between runs); CPU times are medians of host-clock timings.
"""
import copy
import statistics
import time
from typing import Callable, NamedTuple

import torch
from torch import nn

from .modules import CBAM, ECA, PSA, SE, CoordAttn, SelectiveKernel, SimAM
from .modules.sk import fused_sk_tail
from .ops import psa_attention
from .reference import (CbamModule, CoordAttn as CoordAttnReference, EcaModule, SimAM as SimAMReference, PSAModule, SelectiveKernel as SelectiveKernelReference,
                        SelectiveKernelAttn, SEModule, SEWeightModule, psa_attention_reference,
                        sk_attention_reference)


class PSATail(nn.Module):
    """PSA's attention tail alone, for benchmarks: the four branch outputs [B, C/4, H, W] as
    separate tensors (as the branch convs produce them) -> [B, C, H, W]."""

    def __init__(self, channels: int, fused: bool = False):
        super().__init__()
        self.se = SEWeightModule(channels // 4)
        self.fused = fused

    def forward(self, *splits):
        if self.fused:
            return psa_attention(splits, self.se.fc1.weight, self.se.fc1.bias, self.se.fc2.weight, self.se.fc2.bias)
        return psa_attention_reference(splits, self.se)


class SKTail(nn.Module):
    """SK's attention tail alone, for benchmarks: two path tensors [B, C, H, W] (what the
    branch convs produce) -> [B, C, H, W]; the eager reference stacks them, as timm does."""

    def __init__(self, channels: int, fused: bool = False, num_paths: int = 2):
        super().__init__()
        self.attn = SelectiveKernelAttn(channels, num_paths, max(channels // 16, 8))
        self.fused = fused

    def forward(self, *paths):
        if not self.fused:
            return sk_attention_reference(paths, self.attn)
        return fused_sk_tail(self.attn, paths, self.training)


class ResidualTail(nn.Module):
    """A ResNet block's tail for benchmarks: relu(attn(x) + shortcut) on two [B, C, H, W] inputs.
    Eager: the timm block, an add and a ReLU; fused: one op (the residual epilogue)."""

    def __init__(self, attn: nn.Module, fused: bool = False):
        super().__init__()
        self.attn = attn
        self.fused = fused

    def forward(self, x, shortcut):
        if self.fused:
            return self.attn(x, shortcut=shortcut, act="relu")
        return torch.relu(self.attn(x) + shortcut)


def _fused_residual(ref: ResidualTail) -> ResidualTail:
    fused = SE.from_module(ref.attn) if isinstance(ref.attn, SEModule) else ECA.from_module(ref.attn)
    return ResidualTail(fused, fused=True)


def _fused_copy(ref: nn.Module) -> nn.Module:
    """The tail module with ref's weights, device, dtype and mode, running the fused op."""
    new = copy.deepcopy(ref)
    new.fused = True
    return new


class Block(NamedTuple):
    make_ref: Callable[[int], nn.Module]             # reference module for C channels
    to_fused: Callable[[nn.Module], nn.Module]       # fused module with the reference's weights
    input_shapes: Callable[[tuple], list[tuple]] = lambda s: [s]  # the module's inputs for a case shape


#: block name -> Block. A case shape (B, C, H, W) is x for the whole blocks; the tails take the
#: branch outputs: PSA four [B, C/4, H, W] splits, SK two [B, C, H, W] paths; the residual
#: tails x and the shortcut.
BLOCKS: dict[str, Block] = {
    "se": Block(lambda c: SEModule(c), SE.from_module),
    "eca": Block(lambda c: EcaModule(c), ECA.from_module),
    "cbam": Block(lambda c: CbamModule(c), CBAM.from_module),
    "psa": Block(lambda c: PSAModule(c, c), PSA.from_module),  # whole block: convs + attention tail
    "psa_tail": Block(lambda c: PSATail(c), _fused_copy, lambda s: [(s[0], s[1] // 4, *s[2:])] * 4),
    "sk": Block(lambda c: SelectiveKernelReference(c, c), SelectiveKernel.from_module),  # paths + tail
    "sk_tail": Block(lambda c: SKTail(c), _fused_copy, lambda s: [s] * 2),
    "se_residual": Block(lambda c: ResidualTail(SEModule(c)), _fused_residual, lambda s: [s] * 2),
    "eca_residual": Block(lambda c: ResidualTail(EcaModule(c)), _fused_residual, lambda s: [s] * 2),
    "coord": Block(lambda c: CoordAttnReference(c), CoordAttn.from_module),   # timm's CoordAttn
    "simam": Block(lambda c: SimAMReference(), SimAM.from_module),
}

PROVIDERS = ("eager", "compiled", "fused")
#: providers of the GPU sweep: also the fused block captured in a CUDA graph (no host time per call)
GPU_PROVIDERS = PROVIDERS + ("cuda_graph",)


def make_modules(block: str, channels: int, device, dtype, providers=PROVIDERS) -> dict[str, nn.Module]:
    """The reference block (eager), torch.compile of it, and the fused block with its weights."""
    spec = BLOCKS[block]
    ref = spec.make_ref(channels).to(device=device, dtype=dtype)
    out = {}
    for p in providers:
        if p == "eager":
            out[p] = ref
        elif p == "compiled":
            # one static graph per case, as a model with fixed shapes gets: automatic dynamic shapes
            # (after the second shape of the shared forward) is another benchmark, and inductor 2.13
            # failed on SK's dynamic graph ("cannot determine truth value of Relational")
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            out[p] = torch.compile(ref, dynamic=False)
        elif p in ("fused", "cuda_graph"):
            out[p] = spec.to_fused(ref)  # cuda_graph: captured per case by graphed()
    return out


def graphed(module: nn.Module, xs: list[torch.Tensor]) -> Callable:
    """A copy of module captured in CUDA graphs for inputs like xs (forward, and backward when xs
    require grad): replays cost no Python, no argument binding and one graph launch. (A module
    passed to make_graphed_callables has its forward replaced, hence the copy.)"""
    return torch.cuda.make_graphed_callables(copy.deepcopy(module), tuple(xs), num_warmup_iters=3)


def make_inputs(block: str, shape, dtype, layout: str, device, requires_grad=False) -> list[torch.Tensor]:
    """Fresh random inputs of ``block`` for the case shape (one x, or the branch outputs)."""
    return [make_input(s, dtype, layout, device, requires_grad) for s in BLOCKS[block].input_shapes(tuple(shape))]


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


def saved_tensor_bytes(module: nn.Module, *xs: torch.Tensor) -> int:
    """Bytes of the unique storages autograd's saved-tensor hooks see in one forward of
    module(*xs), parameters and buffers left out (they exist anyway); the inputs' storages counted."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(*xs)
    for t in list(module.parameters()) + list(module.buffers()):
        storages.pop(t.untyped_storage().data_ptr(), None)
    return sum(storages.values())


def saved_for_backward_bytes(module: nn.Module, *xs: torch.Tensor) -> int | None:
    """Bytes of the tensors autograd keeps from one forward of module(*xs) for backward,
    beyond the inputs themselves and the module's parameters.

    CUDA: growth of allocated memory over the forward, less the output (covers compiled
    graphs; inputs and parameters are allocated before and not counted). CPU:
    saved_tensor_bytes less the inputs' (None for compiled modules, whose internals hooks miss).
    """
    xs = [x.detach().requires_grad_(True) for x in xs]
    if xs[0].device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        y = module(*xs)
        torch.cuda.synchronize()
        saved = torch.cuda.memory_allocated() - before - y.untyped_storage().nbytes()
        del y
        return max(saved, 0)
    if hasattr(module, "_orig_mod"):
        return None
    inputs = {x.untyped_storage().data_ptr(): x.untyped_storage().nbytes() for x in xs}
    return saved_tensor_bytes(module, *xs) - sum(inputs.values())


def make_input(shape, dtype, layout: str, device, requires_grad=False) -> torch.Tensor:
    x = torch.randn(shape, device=device, dtype=dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


def forward_fn(module: nn.Module, xs: list[torch.Tensor]) -> Callable[[], object]:
    def run():
        with torch.no_grad():
            return module(*xs)
    return run


def forward_backward_fn(module: nn.Module, xs: list[torch.Tensor], dy: torch.Tensor) -> Callable[[], object]:
    def run():
        module(*xs).backward(dy)
    return run


def output_like(module: nn.Module, xs: list[torch.Tensor]) -> torch.Tensor:
    """A random upstream gradient in the shape, dtype and memory format of module(*xs)."""
    with torch.no_grad():
        return torch.randn_like(module(*xs))
