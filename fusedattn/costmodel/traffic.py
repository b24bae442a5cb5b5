"""Global-memory traffic of the Triton kernels, counted under Triton's interpreter.

Every ``tl.load`` / ``tl.store`` the interpreter executes is recorded (the addresses of the
unmasked lanes, with the element size). Per launch and per tensor argument this gives the
unique bytes read and written and the requests (loads or stores issued in all, repeats
included). Across launches a launch-granular LRU model of the GPU's L2 splits each launch's
unique reads into

- ``hbm_read``: bytes not touched by the launches whose combined footprint still fits the L2
  budget (first reads, or data evicted since), and
- ``l2_read``: bytes such a recent launch touched (the second read of an L2 chunk, by design),
  plus the launch's own re-reads (bytes a program loads again after loading them once: a
  one-launch block's second read of its sample). Reads of the same bytes by different programs
  of a launch (weights, halos) count once.

Per launch also: the busiest program's load count and its bytes per tensor argument (loaded
and stored, repeats included): what one SM must move on its own.

Writes are all counted as HBM writes. Needs TRITON_INTERPRET=1 before triton is imported
(``python -m fusedattn.costmodel.traffic`` is run in a subprocess by the cost model).
"""
import contextlib
from typing import NamedTuple

import numpy as np
import torch


class ArgTraffic(NamedTuple):
    index: int                 # ordinal among the launch's tensor arguments
    numel: int                 # elements of the tensor argument
    data_ptr: int              # where the tensor argument starts (tells tensors apart across launches)
    read_bytes: int            # unique bytes read
    write_bytes: int           # unique bytes written
    requests: int              # bytes requested by all loads and stores (repeats included)
    hbm_read: int = 0
    l2_read: int = 0
    reread: int = 0            # bytes a program read again (counted as L2 reads)
    program_bytes: int = 0     # bytes the busiest program loads and stores in this argument


class LaunchTraffic(NamedTuple):
    kernel: str
    grid: tuple
    args: list                 # ArgTraffic per tensor argument
    max_loads_per_program: int  # load instructions executed by the busiest program
    footprint: int             # unique bytes touched (read or written)


class _Recording:
    def __init__(self):
        self.launches: list[LaunchTraffic] = []
        self._touched: list[np.ndarray] = []   # per launch: unique touched byte addresses
        self._reads: list[np.ndarray] = []      # per launch: unique read addresses
        self.current = None

    def start(self, name, grid, tensors):
        self.current = {"name": name, "grid": grid, "tensors": tensors, "loads": [], "stores": [],
                        "per_program": {}}

    def access(self, kind, addrs, size):
        cur = self.current
        if cur is None:
            return
        from triton.runtime.interpreter import interpreter_builder
        pid = interpreter_builder.grid_idx
        cur[kind].append((addrs, size, pid))
        loads, nbytes = cur["per_program"].get(pid, (0, 0))
        cur["per_program"][pid] = (loads + (kind == "loads"), nbytes + addrs.size * size)

    def finish(self):
        cur, self.current = self.current, None
        ranges = []  # (start, end, arg ordinal, numel) of each tensor argument's bytes
        for i, t in enumerate(cur["tensors"]):
            start = t.data_ptr()
            span = sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride())) + 1 if t.numel() else 0
            ranges.append((start, start + span * t.element_size(), i, t.numel()))

        def split(entries):
            """{arg ordinal: (unique element addresses, element size, requested bytes)}."""
            out = {}
            for addrs, size, _ in entries:
                if addrs.size == 0:
                    continue
                for start, end, i, _ in ranges:
                    sel = (addrs >= start) & (addrs < end)
                    if sel.any():
                        a = addrs[sel]
                        prev = out.get(i, (np.empty(0, np.uint64), size, 0))
                        out[i] = (np.concatenate([prev[0], a]), size, prev[2] + a.size * size)
                        addrs = addrs[~sel]
                        if addrs.size == 0:
                            break
            return {i: (np.unique(a), size, req) for i, (a, size, req) in out.items()}

        reads, writes = split(cur["loads"]), split(cur["stores"])
        busiest = max(cur["per_program"], key=lambda p: cur["per_program"][p][1], default=None)
        mine = split([e for e in cur["loads"] + cur["stores"] if e[2] == busiest])
        rereads: dict[int, int] = {}
        by_program: dict = {}
        for e in cur["loads"]:
            by_program.setdefault(e[2], []).append(e)
        for entries in by_program.values():
            for i, (a, size, req) in split(entries).items():
                rereads[i] = rereads.get(i, 0) + req - a.size * size
        args = []
        all_read, all_touched = [], []
        for start, _, i, numel in ranges:
            r, w = reads.get(i), writes.get(i)
            rb = r[0].size * r[1] if r else 0
            wb = w[0].size * w[1] if w else 0
            args.append(ArgTraffic(i, numel, start, rb, wb, (r[2] if r else 0) + (w[2] if w else 0),
                                   reread=rereads.get(i, 0), program_bytes=mine[i][2] if i in mine else 0))
            if r:
                all_read.append(r)
            for e in (r, w):
                if e:
                    all_touched.append(e[0])
        touched = np.unique(np.concatenate(all_touched)) if all_touched else np.empty(0, np.uint64)
        self._touched.append(touched)
        self._reads.append(reads)
        footprint = sum(a.read_bytes + a.write_bytes for a in args)
        loads = max((n for n, _ in cur["per_program"].values()), default=0)
        self.launches.append(LaunchTraffic(cur["name"], cur["grid"], args, loads, footprint))

    def classify(self, l2_bytes: float) -> list[LaunchTraffic]:
        """Split each launch's unique reads into HBM and L2 bytes (launch-granular LRU of
        ``l2_bytes``)."""
        out = []
        for k, launch in enumerate(self.launches):
            window, budget = [], 0
            for j in range(k - 1, -1, -1):
                budget += self.launches[j].footprint
                if budget > l2_bytes:
                    break
                window.append(self._touched[j])
            resident = np.unique(np.concatenate(window)) if window else np.empty(0, np.uint64)
            args = []
            for a in launch.args:
                r = self._reads[k].get(a.index)
                if r is None:
                    args.append(a)
                    continue
                hit = int(np.isin(r[0], resident, assume_unique=True).sum()) * r[1]
                args.append(a._replace(hbm_read=a.read_bytes - hit, l2_read=hit + a.reread))
            out.append(launch._replace(args=args))
        return out


@contextlib.contextmanager
def count_traffic():
    """Record the traffic of every interpreted Triton launch made inside; yields the recording
    (``.classify(l2_bytes)`` gives the LaunchTraffic list)."""
    import triton.runtime.interpreter as interp

    if not hasattr(interp, "GridExecutor"):
        raise RuntimeError("count_traffic needs Triton's interpreter (TRITON_INTERPRET=1 before import)")
    builder = interp.InterpreterBuilder
    saved = (builder.create_masked_load, builder.create_masked_store, interp.GridExecutor.__call__)
    rec = _Recording()

    def masked_load(self, ptrs, mask, *rest):
        size = ptrs.get_element_ty().primitive_bitwidth // 8
        rec.access("loads", np.asarray(ptrs.data).ravel()[np.asarray(mask.data).ravel().astype(bool)], size)
        return saved[0](self, ptrs, mask, *rest)

    def masked_store(self, ptrs, value, mask, *rest):
        size = ptrs.get_element_ty().primitive_bitwidth // 8
        rec.access("stores", np.asarray(ptrs.data).ravel()[np.asarray(mask.data).ravel().astype(bool)], size)
        return saved[1](self, ptrs, value, mask, *rest)

    def grid_call(self, *args_dev, **kwargs):
        grid = self.grid if not callable(self.grid) else None
        tensors = [a for a in args_dev if isinstance(a, torch.Tensor)]
        rec.start(self.fn.__name__, tuple(grid) if grid is not None else None, tensors)
        try:
            return saved[2](self, *args_dev, **kwargs)
        finally:
            rec.finish()

    builder.create_masked_load, builder.create_masked_store = masked_load, masked_store
    interp.GridExecutor.__call__ = grid_call
    try:
        yield rec
    finally:
        builder.create_masked_load, builder.create_masked_store, interp.GridExecutor.__call__ = saved
