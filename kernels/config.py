"""Launch tunables shared by the kernels' launchers.

Tests change these (``monkeypatch.setattr(config, ...)``) to force the chunked and
split code paths on tiny shapes; users normally never touch them.
"""
import functools
import os
from typing import NamedTuple

import torch


class GPUProfile(NamedTuple):
    """What the launchers plan from, for a named GPU (the cost model plans for a profile on any
    machine). ``chunk_fraction``: the share of L2 one chunk of samples may take (the module's
    ``chunk_fraction`` overrides it), half by default, because:

    - an H100's (H200's, A100's) L2 is two partitions (25 MB each on an H100), and a partition
      also caches lines of the far one for the SMs attached to it: a chunk that every SM reads may
      be held twice, so what it can count on is about one partition's worth;
    - the pool pass reads the chunk into L2 (evict_last) and the scale pass writes y (dx) through
      the L2 while it re-reads the chunk; y streams evict_first (kernels' eviction hints), so it
      does not push the chunk out, but it still passes through, as do the partials and vectors;
    - a smaller chunk costs its launches again (one more pool, gate and scale per chunk), which a
      CUDA graph replays without host work but not without the GPU's own launch gaps.

    Where between L2/8 and L2/2 the fastest chunk lies is measured, not derived:
    ``bench/chunk_sweep.py`` (a stage of bench/gpu_session.sh) times SE and CBAM captured in CUDA
    graphs at L2/8, /4 and /2 and records the fastest; 0.5 stands until a lent GPU measures it.
    ``sm_bytes_per_s``: what one SM moves alone (its L2 port is 64 B/clock; about 100 GB/s with
    the loads one program keeps in flight): an assumption until a GPU session measures it."""
    name: str
    sms: int
    l2_bytes: int
    hbm_bytes_per_s: float
    chunk_fraction: float = 0.5
    sm_bytes_per_s: float = 1.0e11

    @property
    def one_launch_bytes(self) -> int:
        """Bytes one program may move alone in a one-launch block (kernels/one_launch.py): as
        long as two launches take, 2 x (2 us on the GPU + 2.5 us on the host: the cost model's
        kernel_fixed_us + driver_launch_us), at one SM's ``sm_bytes_per_s``. SE's pipeline has
        had its gate in the pool launch since (kernels/se_pool_gate.py), so one launch is what
        the one-launch plan saves there; two are kept because a launch's host time measured on
        the GPU machines (13-22 us, bench/results/h200-2026-11-27-round2) is far above 2.5 us."""
        return int(2 * 4.5e-6 * self.sm_bytes_per_s)

    @property
    def chunk_bytes(self) -> int:
        return max(int(self.l2_bytes * self.chunk_fraction), 1)

    @property
    def target_programs(self) -> int:
        return 4 * self.sms


#: Profiles by name: SM count, L2 size and HBM bandwidth from NVIDIA's data sheets.
PROFILES = {
    "h100": GPUProfile("h100", 132, 50 * 2**20, 3.35e12),   # H100 SXM5 80 GB
    "a100": GPUProfile("a100", 108, 40 * 2**20, 2.0e12),    # A100 SXM4 80 GB (2.04 TB/s)
}

#: Plan for this profile instead of the device present (the cost model sets it).
profile: GPUProfile | None = None

#: The share of L2 a chunk of samples takes, for every profile (``None``: the profile's own
#: ``chunk_fraction``). The chunk sweep sets it; env: FUSEDATTN_CHUNK_FRACTION (e.g. 0.25).
def _fraction_from_env(name: str) -> float | None:
    text = os.environ.get(name, "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be a share of the L2 in (0, 1], got {text!r}")
    return value


chunk_fraction: float | None = _fraction_from_env("FUSEDATTN_CHUNK_FRACTION")

#: Bytes of x processed per chunk of samples. The pool pass reads a chunk of x, the
#: scale pass reads it again right after: with the chunk inside L2, that second read
#: is an L2 hit. ``None`` means: by ``l2_chunks``, half of the device's L2 or unlimited.
chunk_bytes: int | None = None

#: Walk the batch in L2 chunks (True), in one chunk (False), or (``None``) in L2 chunks only while
#: a CUDA graph is being captured. Each chunk costs its launches again (pool, gate, scale: 3
#: forward, 3 backward; SE 2 and 2, its gate in the pool launch; CBAM 6 and 8) and saves one HBM
#: read of its share of x (about 8 us per 25 MB chunk on an H100). A launch costs far more than
#: that on the host: measured on an H100 machine (torch 2.11, triton 3.6, 2026-11-26,
#: bench/results/h100-2026-11-26) a bare Triton launch takes 13-20 us of host time with 4
#: arguments and 24-36 us with 28, and SE's forward at 64x256x56x56 (4 chunks, 12 launches) 645 us
#: host for 139 us of kernels. So an eager call takes one chunk; a captured graph replays its
#: launches without host work, and there the chunks pay.
#: Env: FUSEDATTN_L2_CHUNKS=1 (always) or 0 (never).
l2_chunks: bool | None = {"1": True, "0": False}.get(os.environ.get("FUSEDATTN_L2_CHUNKS", ""))

#: Launch compiled kernels through kernels/launch.py's lean path (False: every launch through
#: Triton's JITFunction.run). Env: FUSEDATTN_FAST_LAUNCH=0 turns it off.
fast_launch: bool = os.environ.get("FUSEDATTN_FAST_LAUNCH", "1") != "0"

#: Number of programs the pooling pass aims for (it splits H*W to get there).
#: ``None`` means 4 per SM on CUDA, 4 under the interpreter.
target_programs: int | None = None

#: Force (True) or forbid (False) the one-launch SE forward (kernels/one_launch.py), and SimAM's
#: one launch against its H*W split (kernels/simam.py); ``None``:
#: the launcher's rule. Tests force both paths.
one_launch: bool | None = None
#: The same for SE's backward alone (``None``: as ``one_launch``). The cost model pins a real case's
#: plan on its scaled copy with both: a large sample can fit one program forward (3 passes) and not
#: backward (4).
one_launch_backward: bool | None = None

#: Force (True) or forbid (False) SE's cooperative forward (kernels/se_cooperative.py: the whole
#: call in one launch, many programs per sample); ``None``: the launcher's rule (a small call that
#: fits one resident wave and L2). Tests force both paths.
cooperative: bool | None = None
#: The same for SE's backward alone (``None``: as ``cooperative``; the cost model pins each pass).
cooperative_backward: bool | None = None

#: Force (True) or forbid (False) SE's gate spread over many programs (kernels/mlp_gate.py)
#: instead of one program per sample (kernels/se_gate.py); ``None``: the launcher's rule.
parallel_gate: bool | None = None

#: Rows per program of that gate (kernels/mlp_gate.mlp_tiles); ``None``: from the chunk's batch.
mlp_block_n: int | None = None

#: Fill every output buffer with NaN before a kernel writes it (tests set this, so an
#: element a kernel forgets to write fails the comparison). Env: FUSEDATTN_POISON=1.
poison_outputs: bool = os.environ.get("FUSEDATTN_POISON", "0") == "1"


@functools.lru_cache(maxsize=None)
def cuda_profile(index: int) -> GPUProfile:
    """The profile of CUDA device ``index``, read once (no device query per call)."""
    props = torch.cuda.get_device_properties(index)
    l2 = getattr(props, "L2_cache_size", 0) or 40 * 2**20
    return GPUProfile(props.name, props.multi_processor_count, max(l2, 2 << 20), 0.0)


def device_profile(device: torch.device) -> GPUProfile | None:
    if profile is not None:
        return profile
    if device.type == "cuda":
        return cuda_profile(device.index if device.index is not None else torch.cuda.current_device())
    return None


def planned_chunk_bytes(p: GPUProfile | None, capturing: bool = False) -> int:
    """Bytes of x per chunk of samples for profile ``p``: ``chunk_bytes`` if set, else the
    profile's L2 share where ``l2_chunks`` (or, unset, a CUDA graph capture) asks for chunks,
    else one chunk."""
    if chunk_bytes is not None:
        return chunk_bytes
    if p is None or not (l2_chunks if l2_chunks is not None else capturing):
        return 1 << 62
    if chunk_fraction is not None:
        return max(int(p.l2_bytes * chunk_fraction), 1)
    return p.chunk_bytes


def device_chunk_bytes(device: torch.device) -> int:
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    return planned_chunk_bytes(device_profile(device), capturing)


def device_target_programs(device: torch.device) -> int:
    if target_programs is not None:
        return target_programs
    p = device_profile(device)
    return p.target_programs if p is not None else 4


def new_buffer(shape, dtype, device, memory_format=torch.contiguous_format) -> torch.Tensor:
    """An output buffer: uninitialised, or NaN-filled when ``poison_outputs`` is set."""
    out = torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format)
    if poison_outputs:
        out.fill_(float("nan"))
    return out


def new_like(t: torch.Tensor) -> torch.Tensor:
    """Like ``new_buffer`` with t's shape, dtype and device, in channels_last if t is
    channels_last, else contiguous (the rule every fusedattn output follows)."""
    if t.is_contiguous():
        out = torch.empty_like(t, memory_format=torch.contiguous_format)
    else:
        from .layout import suggested_memory_format
        out = torch.empty_like(t, memory_format=suggested_memory_format(t))
    if poison_outputs:
        out.fill_(float("nan"))
    return out
