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

Eviction hints (``tl.load`` / ``tl.store`` with ``eviction_policy``) count too: bytes whose last
access in a launch was ``evict_first`` are the first the L2 gives up, so they neither stay
resident for later launches nor take room from what does; and a launch's own writes without
that hint fill the L2 as it runs, on average half of them before any one of its reads, so half
of them take room from the resident window its reads may hit.

Per launch also: the busiest program's load count and its bytes per tensor argument (loaded
and stored, repeats included): what one SM must move on its own. A cooperative kernel
(``SHARED_WORK``: programs take tiles from a counter once a flag is up) is the exception: the
interpreter runs its programs one after another, so the program that raises the flag does
every tile, where on a GPU all programs share them. There each program's bytes and loads are
the launch's mean, plus the flag's chain of round trips, and every repeated read of the launch
(the second read of x, by whichever program takes the tile) counts as an L2 read.

Writes are all counted as HBM writes. Needs TRITON_INTERPRET=1 before triton is imported
(``python -m fusedattn.costmodel.traffic`` is run in a subprocess by the cost model).
"""
import contextlib
from typing import NamedTuple

import numpy as np
import torch


#: Cooperative kernels -> round trips on the way from a program's pool to its first tile (on the
#: GPU; an estimate: the channel block's arrival, its partials and W1 tiles, the sample's arrival,
#: its hidden shares, the flag, the first claim, the tile's hidden and W2 tiles).
SHARED_WORK = {"se_cooperative_kernel": 10, "se_cooperative_backward_kernel": 10}


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
    resident: int = 0          # of those, bytes not last touched evict_first (what stays in L2)
    own_writes: int = 0        # unique bytes written without evict_first (they fill the L2 as it runs)


class _Recording:
    def __init__(self):
        self.launches: list[LaunchTraffic] = []
        self._touched: list[np.ndarray] = []   # per launch: unique addresses left in L2 (not streamed)
        self._reads: list[np.ndarray] = []      # per launch: unique read addresses
        self.current = None

    def start(self, name, grid, tensors):
        self.current = {"name": name, "grid": grid, "tensors": tensors, "loads": [], "stores": [],
                        "per_program": {}, "streamed": []}

    def access(self, kind, addrs, size, evict_first=False):
        cur = self.current
        if cur is None:
            return
        from triton.runtime.interpreter import interpreter_builder
        pid = interpreter_builder.grid_idx
        cur[kind].append((addrs, size, pid))
        cur["streamed"].append((addrs, size, evict_first, kind == "stores"))   # every access, in order
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
        shared = cur["name"] in SHARED_WORK
        n_programs = max(len(cur["per_program"]), 1)
        if shared:   # the launch's mean per program (see the module docstring)
            mine = {i: (None, None, -(-((reads[i][2] if i in reads else 0) + (writes[i][2] if i in writes else 0))
                                      // n_programs)) for i in set(reads) | set(writes)}
            rereads = {i: req - a.size * size for i, (a, size, req) in reads.items()}
        else:
            busiest = max(cur["per_program"], key=lambda p: cur["per_program"][p][1], default=None)
            mine = split([e for e in cur["loads"] + cur["stores"] if e[2] == busiest])
            rereads = {}
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
        streamed, streamed_bytes = _last_evict_first(cur["streamed"])
        self._touched.append(np.setdiff1d(touched, streamed, assume_unique=True))
        self._reads.append(reads)
        footprint = sum(a.read_bytes + a.write_bytes for a in args)
        kept_writes = split([(a, s, 0) for a, s, first, store in cur["streamed"] if store and not first])
        own_writes = sum(a.size * size for a, size, _ in kept_writes.values())
        if shared:
            loads = -(-sum(n for n, _ in cur["per_program"].values()) // n_programs) + SHARED_WORK[cur["name"]]
        else:
            loads = max((n for n, _ in cur["per_program"].values()), default=0)
        self.launches.append(LaunchTraffic(cur["name"], cur["grid"], args, loads, footprint,
                                           max(footprint - streamed_bytes, 0), own_writes))

    def classify(self, l2_bytes: float) -> list[LaunchTraffic]:
        """Split each launch's unique reads into HBM and L2 bytes (launch-granular LRU of
        ``l2_bytes``; bytes streamed with evict_first do not stay, half a launch's own other
        writes take room)."""
        out = []
        for k, launch in enumerate(self.launches):
            window, budget = [], launch.own_writes // 2
            for j in range(k - 1, -1, -1):
                budget += self.launches[j].resident
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


def _last_evict_first(accesses) -> tuple[np.ndarray, int]:
    """(unique addresses, their bytes) whose last access in ``accesses`` ((addresses, element
    size, evict_first, is a store) in program order) was evict_first."""
    if not accesses:
        return np.empty(0, np.uint64), 0
    addrs = np.concatenate([a for a, _, _, _ in accesses])
    sizes = np.concatenate([np.full(a.size, s, np.int64) for a, s, _, _ in accesses])
    first = np.concatenate([np.full(a.size, f, bool) for a, _, f, _ in accesses])
    _, last = np.unique(addrs[::-1], return_index=True)   # index of each address's last access, reversed
    last = addrs.size - 1 - last
    keep = last[first[last]]
    return np.unique(addrs[keep]), int(sizes[keep].sum())


def _evict_first(args) -> bool:
    """Whether a builder call's cache arguments ask for evict_first (triton 3.9 passes the
    policy string count_traffic's get_cache_policy returns; older versions an enum or a string)."""
    return any("evict_first" in str(a).lower() for a in args if a is not None and not isinstance(a, bool))


@contextlib.contextmanager
def count_traffic():
    """Record the traffic of every interpreted Triton launch made inside; yields the recording
    (``.classify(l2_bytes)`` gives the LaunchTraffic list)."""
    import triton.runtime.interpreter as interp

    if not hasattr(interp, "GridExecutor"):
        raise RuntimeError("count_traffic needs Triton's interpreter (TRITON_INTERPRET=1 before import)")
    builder = interp.InterpreterBuilder
    saved = (builder.create_masked_load, builder.create_masked_store, interp.GridExecutor.__call__)
    policy = getattr(builder, "get_cache_policy", None)   # triton >= 3.9: hints pass as one object
    rec = _Recording()

    def masked_load(self, ptrs, mask, *rest):
        size = ptrs.get_element_ty().primitive_bitwidth // 8
        rec.access("loads", np.asarray(ptrs.data).ravel()[np.asarray(mask.data).ravel().astype(bool)], size,
                   _evict_first(rest[1:]))
        return saved[0](self, ptrs, mask, *rest)

    def masked_store(self, ptrs, value, mask, *rest):
        size = ptrs.get_element_ty().primitive_bitwidth // 8
        rec.access("stores", np.asarray(ptrs.data).ravel()[np.asarray(mask.data).ravel().astype(bool)], size,
                   _evict_first(rest))
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
    if policy is not None:
        builder.get_cache_policy = lambda self, cache_modifier, eviction_policy: eviction_policy
    try:
        yield rec
    finally:
        builder.create_masked_load, builder.create_masked_store, interp.GridExecutor.__call__ = saved
        if policy is not None:
            builder.get_cache_policy = policy
