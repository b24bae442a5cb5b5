"""Run the Triton path on CPU tensors with a recording driver in place of CUDA (no GPU needed).

Triton's own launch path runs unchanged: ``JITFunction.run`` binds the arguments, specializes
them as the JIT does on a GPU (divisibility by 16, values equal to 1), compiles each new
variant for the target (sm_90 by default: ptxas ships with triton) and calls the launcher.
Only the launcher differs: instead of ``cuLaunchKernel`` it records the launch (kernel, grid,
warps, the compiled variant). So the launches are the ones a GPU of the configured profile
would get, each variant's PTX is what would run, and the host time of a call is all of it but
the driver's launch itself.

Use::

    with dry_run() as launches:      # TRITON_INTERPRET must be unset
        fused_module(x)              # CPU tensors, backend 'triton'
    for launch in launches: ...
"""
import contextlib
import hashlib
import json
import os
import pathlib
import re
import subprocess
import tempfile
import types
from typing import NamedTuple

import torch

#: Shared memory per block the recording driver reports (sm_90: 227 KB).
MAX_SHARED = 232448


class Launch(NamedTuple):
    kernel: str
    grid: tuple[int, int, int]
    num_warps: int
    jit_fn: object           # the triton JITFunction
    metadata: object         # the compiled variant's metadata (compiled_variant() finds the variant)
    tensor_numels: tuple     # elements of each tensor argument, in order (no tensor is kept alive)

    @property
    def programs(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]


class _Recorder:
    """The launcher of one compiled variant: records instead of launching."""

    def __init__(self, driver, src, metadata):
        self.driver, self.fn, self.metadata = driver, getattr(src, "fn", None), metadata

    def __call__(self, gx, gy, gz, stream, function, packed_metadata, launch_metadata, enter_hook, exit_hook, *args):
        if self.driver.launches is not None:
            name = getattr(self.fn, "__name__", "?")
            numels = tuple(a.numel() for a in args if isinstance(a, torch.Tensor))
            self.driver.launches.append(Launch(name, (gx, gy, gz), self.metadata.num_warps, self.fn,
                                               self.metadata, numels))


class RecordingDriver:
    """A Triton driver for a CUDA target that records launches instead of making them."""

    def __init__(self, arch: int = 90):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)
        self.launches: list[Launch] | None = None
        self.utils = types.SimpleNamespace(
            load_binary=lambda name, kernel, shared, device: (0, 0, 0, 0, 1024),
            get_device_properties=lambda device: {"max_shared_mem": MAX_SHARED, "multiprocessor_count": 132,
                                                  "max_num_regs": 65536, "warpSize": 32})

    @staticmethod
    def is_active():
        return False

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def get_active_torch_device(self):
        return torch.device("cpu")

    def launcher_cls(self, src, metadata):
        return _Recorder(self, src, metadata)


_DRIVER: RecordingDriver | None = None


@contextlib.contextmanager
def dry_run(arch: int = 90, record: bool = True):
    """Record every Triton launch made inside (a list of Launch), on CPU tensors. With
    ``record=False`` the launcher returns at once (host timing: the recording's own work is not
    the driver's, whose launch cost the cost model adds as a constant)."""
    global _DRIVER
    from triton.runtime import driver

    from ..backend import use_backend
    from ..kernels import config

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("dry_run needs real Triton kernels: unset TRITON_INTERPRET")
    if _DRIVER is None or _DRIVER.target.arch != arch:
        _DRIVER = RecordingDriver(arch)
    launches: list[Launch] = []
    previous = driver._active
    driver.set_active(_DRIVER)
    _DRIVER.launches = launches if record else None
    poison, config.poison_outputs = config.poison_outputs, False
    from .. import backend
    backend.recording_launches = True
    try:
        with use_backend("triton"):
            yield launches
    finally:
        backend.recording_launches = False
        config.poison_outputs = poison
        _DRIVER.launches = None
        driver._active = previous


def compiled_variant(launch: Launch):
    """The triton CompiledKernel that ``launch`` ran (from its JITFunction's kernel cache)."""
    for caches in launch.jit_fn.device_caches.values():
        for cache in caches:
            if isinstance(cache, dict):
                for kernel in cache.values():
                    if getattr(kernel, "metadata", None) is launch.metadata:
                        return kernel
    raise LookupError(f"no compiled variant of {launch.kernel} found")


# ---- what ptxas says about a variant ----------------------------------------------------

_ACCESS = re.compile(r"\b(ld|st)\.global((?:\.[a-zA-Z0-9_:]+)*?)(?:\.v(\d))?\.(b|f|u|s)(8|16|32|64)\b")


class VariantReport(NamedTuple):
    registers: int
    spill_bytes: int
    load_bits: tuple[int, ...]    # widths of the global loads in the PTX, sorted, unique
    store_bits: tuple[int, ...]
    f32_scalars: int              # kernel parameters passed as fp32 scalars (a Python float argument)
    hinted_load_bits: tuple[int, ...] = ()   # widths of the global loads with an L2 eviction hint
    hinted_store_bits: tuple[int, ...] = ()


def access_widths(ptx: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(load widths, store widths) in bits of the global memory instructions in ``ptx``."""
    loads, stores = set(), set()
    for op, _, vec, _, bits in _ACCESS.findall(ptx):
        (loads if op == "ld" else stores).add(int(vec or 1) * int(bits))
    return tuple(sorted(loads)), tuple(sorted(stores))


def hinted_widths(ptx: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(load widths, store widths) in bits of the global accesses in ``ptx`` that carry an L2
    eviction hint (Triton's eviction_policy becomes ``.L2::cache_hint`` with a createpolicy)."""
    loads, stores = set(), set()
    for op, modifiers, vec, _, bits in _ACCESS.findall(ptx):
        if "L2::cache_hint" in modifiers:
            (loads if op == "ld" else stores).add(int(vec or 1) * int(bits))
    return tuple(sorted(loads)), tuple(sorted(stores))


def _ptxas_cache_file(ptx: str, arch: int, ptxas: str) -> pathlib.Path:
    """Where ptxas_usage keeps its answer for this PTX, arch and ptxas binary (by size and mtime):
    $FUSEDATTN_CACHE_DIR or ~/.cache/fusedattn, under ptxas/. A pure function of those, like
    Triton's own compile cache: repeated runs (CI, the cost model) skip the ptxas process."""
    stat = os.stat(ptxas)
    key = hashlib.sha256(f"{arch}\0{ptxas}\0{stat.st_size}\0{stat.st_mtime_ns}\0{ptx}".encode()).hexdigest()
    root = pathlib.Path(os.environ.get("FUSEDATTN_CACHE_DIR") or pathlib.Path.home() / ".cache" / "fusedattn")
    return root / "ptxas" / f"{key}.json"


def ptxas_usage(ptx: str, arch: int = 90) -> tuple[int, int]:
    """(registers per thread, spill store + load bytes) that ptxas reports for the PTX."""
    from triton.backends.nvidia import compiler as nv

    try:
        ptxas = nv.get_ptxas(arch).path  # triton >= 3.7
    except TypeError:
        ptxas = nv.get_ptxas().path
    cache = _ptxas_cache_file(ptx, arch, ptxas)
    try:
        regs, spills = json.loads(cache.read_text())
        return int(regs), int(spills)
    except (OSError, ValueError, TypeError):
        pass
    regs, spills = _run_ptxas(ptx, arch, ptxas)
    if not regs:   # ptxas failed: nothing to keep
        return regs, spills
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps([regs, spills]))
        os.replace(tmp, cache)
    except OSError:
        pass
    return regs, spills


def _run_ptxas(ptx: str, arch: int, ptxas: str) -> tuple[int, int]:
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        out = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{arch}a", f.name, "-o", os.devnull],
                             capture_output=True, text=True).stderr
    regs = sum(int(r) for r in re.findall(r"Used (\d+) registers", out))
    spills = sum(int(a) + int(b) for a, b in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", out))
    return regs, spills


def variant_report(launch: Launch, arch: int = 90) -> VariantReport:
    """Registers, spills, global access widths and eviction hints of the variant ``launch`` ran."""
    ptx = compiled_variant(launch).asm["ptx"]
    regs, spills = ptxas_usage(ptx, arch)
    return VariantReport(regs, spills, *access_widths(ptx), len(re.findall(r"\.param \.f32 ", ptx)),
                         *hinted_widths(ptx))
