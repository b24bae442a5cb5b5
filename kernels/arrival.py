"""Arrival counters: the last program of a group to finish does the group's follow-up work.

A program that has stored its share (say a sample's pooling partials) adds 1 to its group's
counter; the one that draws the last ticket (``programs - 1``) reads what the others stored and
finishes the group's work (SE's gate), then sets the counter back to 0. So the follow-up costs
no launch of its own, and its result does not depend on which program came last: that program
reads every share in a fixed order.

The counters are int32 zeros that every kernel leaves at zero, kept per (device, stream), so
launches queued on one stream never share them with launches running on another. A CUDA graph
capture gets fresh zeros (their fill is captured too, so every replay starts from zeros, and the
kept counters of the capturing stream are never touched by a launch that has not yet run).
Ordering (GPU; ``last_to_arrive``): a program stores its share, passes a CTA barrier
(tl.debug_barrier), then takes its ticket with an acq_rel atomic at GPU scope; the last program
reads the shares from L2 (.cg loads), never from a stale L1.
"""
import torch
import triton
import triton.language as tl

#: (device type, index, stream) -> the counters
_COUNTERS: dict[tuple, torch.Tensor] = {}
#: Counters allocated at least (a batch of up to this many groups needs no new allocation)
MIN_COUNTERS = 1024


def arrival_counters(device: torch.device, n: int) -> torch.Tensor:
    """At least ``n`` int32 counters at zero on ``device`` for the current stream; the kernel that
    takes tickets from them must leave them at zero."""
    if device.type == "cuda":
        if torch.cuda.is_current_stream_capturing():
            return torch.zeros(n, dtype=torch.int32, device=device)
        index = device.index if device.index is not None else torch.cuda.current_device()
        key = ("cuda", index, torch._C._cuda_getCurrentRawStream(index))
    else:
        key = (device.type, device.index, 0)
    counters = _COUNTERS.get(key)
    if counters is None or counters.numel() < n:
        counters = _COUNTERS[key] = torch.zeros(max(n, MIN_COUNTERS), dtype=torch.int32, device=device)
    return counters


@triton.jit
def last_to_arrive(count_ptr, group, programs):
    """True in the one program of ``group`` that arrives last of its ``programs`` (every one calls
    this once, after storing its share); that program also sets the group's counter back to 0."""
    tl.debug_barrier()   # every thread's share stored before the ticket
    ticket = tl.atomic_add(count_ptr + group, 1, sem="acq_rel", scope="gpu")
    last = ticket == programs - 1
    if last:
        tl.store(count_ptr + group, 0)
    return last


@triton.jit
def split_sum(at, plane, m, splits):
    """The shares at ``at`` (any tile shape, mask m) of every split, ``plane`` apart, added in split
    order (whichever program came last), read from L2."""
    total = tl.load(at, mask=m, other=0.0, cache_modifier=".cg")
    for k in range(1, splits):
        total += tl.load(at + k * plane, mask=m, other=0.0, cache_modifier=".cg")
    return total
