"""A lean launch path for compiled kernels: ``fast(kernel)[grid](*args, **kwargs)``.

Triton's ``JITFunction.run`` binds and specializes every argument on every launch (the binder,
the cache key, the globals check, launch metadata): on an H100 machine (torch 2.11, triton 3.6,
2026-11-26) a bare launch took 13 us of host time with 4 arguments and 25-37 us with 28, more
than the kernels of a batch-1 call. Here the first launch of a variant goes through the JIT,
which compiles it and returns the CompiledKernel; later launches whose arguments give the same
key call that kernel's launcher directly. A launch with 28 arguments on the recording driver of
the CI machine: 8 us of Python this way, 29 us through the JIT (its binder alone 12 us).

The key is a superset of what the JIT specializes on, so equal keys mean the same variant:
the current device, the keyword arguments (constexprs and launch options such as num_warps) by
name and value, each argument's type, each tensor's dtype and whether its address is 16-byte
aligned, and every other argument's value itself (ints exactly, so divisibility by 16, equality
to 1 and the 32/64-bit choice are all in it). tests/fast_launch_check.py compares every block's
launches, arguments in order, with the JIT's.

Under Triton's interpreter ``fast`` returns the kernel itself. ``config.fast_launch = False`` (or
FUSEDATTN_FAST_LAUNCH=0) sends every launch through the JIT; so do launch hooks (profilers such
as proton set them) and a Triton whose JIT calls its launcher differently from the convention
below (checked once, from the installed Triton's own source).
"""
import functools
import inspect
import operator

import torch
from triton import knobs
from triton.runtime import driver

from . import config

#: Keys kept per kernel (shapes of a network repeat; a stream of new shapes starts over).
MAX_VARIANTS = 4096
#: How JITFunction.run calls a compiled kernel's launcher (triton 3.6 to 3.9): the fast path calls it so.
LAUNCH_CALL = "kernel.run(grid_0, grid_1, grid_2, stream, kernel.function, kernel.packed_metadata, launch_metadata,"


@functools.lru_cache(maxsize=None)
def _convention_holds() -> bool:
    """True if the installed Triton's JITFunction.run calls the launcher as the fast path does."""
    from triton.runtime.jit import JITFunction

    try:
        source = " ".join(inspect.getsource(JITFunction.run).split())
    except (OSError, TypeError):
        return False
    return LAUNCH_CALL in source


def _hooks_set() -> bool:
    """True if a launch hook is installed (triton 3.6+ keeps them as HookChains, empty by default)."""
    return any(hook is not None and getattr(hook, "calls", True)
               for hook in (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook))


def _picker(indices: list[int]):
    """A C-speed function: a tuple of the items at ``indices`` (always a tuple)."""
    if len(indices) > 1:
        return operator.itemgetter(*indices)
    if indices:
        i = indices[0]
        return lambda values: (values[i],)
    return lambda values: ()


class FastLaunch:
    """``kernel``'s launches, with the compiled variant looked up by a key (module doc). The key
    is built at C speed: the arguments' types pick (once per type pattern) which are tensors;
    their dtypes and the others' values go into the key, and whether every tensor's address is
    16-byte aligned (or, when one is not, which are)."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.params = [p.name for p in kernel.params]
        self.by_name: dict[tuple, object] = {}   # (positional count, keyword names) -> pick the rest in order
        self.variants: dict[tuple, object] = {}
        self.pickers: dict[tuple, tuple] = {}   # argument types -> (pick tensors, pick the rest)

    def __getitem__(self, grid):
        return functools.partial(self.launch, grid)

    def launch(self, grid, *args, **kwargs):
        names, given = tuple(kwargs), tuple(kwargs.values())   # constexprs and launch options, by name
        values = args
        if names:
            pick = self.by_name.get((len(args), names))
            if pick is None:
                rest = self.params[len(args):]
                if not set(rest) <= set(names):   # a parameter left to its default: the JIT binds it
                    return self.kernel[grid](*args, **kwargs)
                pick = self.by_name[(len(args), names)] = _picker([names.index(n) for n in rest])
            values = args + pick(given)
        types = tuple(map(type, values))
        pickers = self.pickers.get(types)
        if pickers is None:
            tensors = [i for i, t in enumerate(types) if issubclass(t, torch.Tensor)]
            pickers = self.pickers[types] = (_picker(tensors), _picker([i for i in range(len(types))
                                                                        if i not in tensors]))
        tensors = pickers[0](values)
        if _hooks_set():
            return self.kernel[grid](*args, **kwargs)
        aligned = True   # every tensor 16-byte aligned (the usual case); else which are
        if functools.reduce(operator.or_, map(_DATA_PTR, tensors), 0) & 15:
            aligned = tuple([not p & 15 for p in map(_DATA_PTR, tensors)])
        active = driver.active
        device = active.get_current_device()
        key = (device, names, given, types, pickers[1](values), tuple(map(_DTYPE, tensors)), aligned)
        compiled = self.variants.get(key)
        if compiled is None:
            compiled = self.kernel[grid](*args, **kwargs)
            if compiled is not None:
                if len(self.variants) >= MAX_VARIANTS:
                    self.variants.clear()
                self.variants[key] = compiled
            return compiled
        g0, g1, g2 = (*grid, 1, 1)[:3]
        compiled.run(g0, g1, g2, active.get_current_stream(device), compiled.function, compiled.packed_metadata,
                     None, None, None, *values)
        return compiled


_DATA_PTR = torch.Tensor.data_ptr
_DTYPE = operator.attrgetter("dtype")


#: id(kernel) -> its FastLaunch, or the kernel where the fast path does not apply (kernels are
#: module globals, never freed; by id: a JITFunction hashes its source's cache key on each lookup)
_FAST: dict = {}


def fast(kernel):
    """kernel's lean launcher (``fast(k)[grid](...)`` launches as ``k[grid](...)`` does), or the
    kernel itself under the interpreter, with config.fast_launch False, or on a Triton whose
    launch convention differs."""
    if not config.fast_launch:
        return kernel
    launcher = _FAST.get(id(kernel))
    if launcher is None:
        interpreted = type(kernel).__name__ == "InterpretedFunction"
        launcher = _FAST[id(kernel)] = kernel if interpreted or not _convention_holds() else FastLaunch(kernel)
    return launcher
