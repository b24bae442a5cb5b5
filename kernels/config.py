"""Launch tunables shared by the kernels' launchers.

Tests change these (``monkeypatch.setattr(config, ...)``) to force the chunked and
split code paths on tiny shapes; users normally never touch them.
"""
import os

import torch

#: Bytes of x processed per chunk of samples. The pool pass reads a chunk of x, the
#: scale pass reads it again right after: with the chunk inside L2, that second read
#: is an L2 hit. ``None`` means: half of the device's L2 (CUDA) or unlimited (CPU).
chunk_bytes: int | None = None

#: Number of programs the pooling pass aims for (it splits H*W to get there).
#: ``None`` means 4 per SM on CUDA, 4 under the interpreter.
target_programs: int | None = None

#: Fill every output buffer with NaN before a kernel writes it (tests set this, so an
#: element a kernel forgets to write fails the comparison). Env: FUSEDATTN_POISON=1.
poison_outputs: bool = os.environ.get("FUSEDATTN_POISON", "0") == "1"


def device_chunk_bytes(device: torch.device) -> int:
    if chunk_bytes is not None:
        return chunk_bytes
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        l2 = getattr(props, "L2_cache_size", 0) or 40 * 2**20
        return max(l2 // 2, 1 << 20)
    return 1 << 62


def device_target_programs(device: torch.device) -> int:
    if target_programs is not None:
        return target_programs
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def new_buffer(shape, dtype, device, memory_format=torch.contiguous_format) -> torch.Tensor:
    """An output buffer: uninitialised, or NaN-filled when ``poison_outputs`` is set."""
    out = torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format)
    if poison_outputs:
        out.fill_(float("nan"))
    return out


def new_like(t: torch.Tensor) -> torch.Tensor:
    """Like ``new_buffer`` with t's shape, dtype and device, in channels_last if t is
    channels_last, else contiguous (the rule every fusedattn output follows)."""
    from .layout import suggested_memory_format

    out = torch.empty_like(t, memory_format=suggested_memory_format(t))
    if poison_outputs:
        out.fill_(float("nan"))
    return out
