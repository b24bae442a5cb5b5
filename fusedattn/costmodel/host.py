"""Host time of a call, measured on this CPU.

Candidates take turns inside every round, in reversed order every other round (A B, B A, ...),
so drift, other load on the machine and the allocator state one leaves for the next hit them
alike; a turn times ``calls`` back-to-back calls of one candidate; the figure is the median
over rounds, per call, in microseconds, on one thread.
"""
import statistics
import time
from typing import Callable

import torch


def interleaved_us(fns: dict[str, Callable[[], object]], calls: int = 20, rounds: int = 60,
                   warmup: int = 20) -> dict[str, float]:
    """Median microseconds per call of each function in ``fns``, measured interleaved."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        samples: dict[str, list[float]] = {name: [] for name in fns}
        order = list(fns.items())
        for r in range(rounds):
            for name, fn in (order if r % 2 == 0 else order[::-1]):
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                samples[name].append((time.perf_counter() - start) / calls * 1e6)
        return {name: statistics.median(v) for name, v in samples.items()}
    finally:
        torch.set_num_threads(threads)
