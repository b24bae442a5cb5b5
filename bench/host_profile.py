"""Where a fused call's time goes on the host: for the GPU round, where the first measurement
(H200, 2026-11-25) found fused calls 2-10x slower than the same calls captured in a CUDA graph.

    python bench/host_profile.py [--shape 64,256,56,56] [--blocks se,eca,cbam] [--calls 30]

Per block, pass (forward; forward+backward, with the backward alone beside it) and provider
(eager reference, fused), median over ``calls`` calls:
  host us    perf_counter around one call, no synchronisation (what the host spends submitting)
  wall us    back-to-back calls ended by one synchronisation, per call (max of host and device)
  kernels    device kernels per call (torch.profiler), and their summed device time in us
Then torch.profiler's top host ops (self CPU time) of the fused forward+backward, which name the
Python and launch work between the kernels, and the host cost of one Triton launch with 4 and with
28 arguments (the cost model's per-launch constant). ``--cprofile N``: cProfile over N fused
forward calls per block, the Python functions by own time (where the host time of a call goes
below the one lump torch.profiler shows for the op). On CPU tensors it runs too (the CPU route;
host = wall; the launch timing needs a GPU or Triton's interpreter and is skipped without either).
"""
import argparse
import statistics
import time

import torch
import triton
import triton.language as tl

from fusedattn import benchmark as measure


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _host_us(fn, calls, device, sync_each=True):
    """Median host us of one call of fn (after one warm-up), synchronising after each or not."""
    fn()
    _sync(device)
    host = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        host.append((time.perf_counter() - start) * 1e6)
        if sync_each:
            _sync(device)
    _sync(device)
    return statistics.median(host)


def _timed(fn, calls, device):
    """(median host us of one call, wall us per call of `calls` back-to-back calls)."""
    host = _host_us(fn, calls, device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return host, (time.perf_counter() - start) * 1e6 / calls


def _kernels(fn, device, calls=5):
    """(kernels per call, device us per call, profiler) of fn under torch.profiler."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(calls):
            fn()
        _sync(device)
    gpu = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return len(gpu) / calls, sum(e.device_time_total for e in gpu) / calls, prof


@triton.jit
def _touch_kernel(p0, p1, p2, p3, p4, p5, p6, p7, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12,
                  a13, a14, a15, a16, a17, a18, a19, N: tl.constexpr):
    """Writes one element: the host cost of launching a kernel with 28 arguments."""
    tl.store(p0 + tl.arange(0, N), tl.full([N], a0 + a19, tl.float32))


@triton.jit
def _touch4_kernel(p0, a0, a1, N: tl.constexpr):
    tl.store(p0 + tl.arange(0, N), tl.full([N], a0 + a1, tl.float32))


def launch_cost_us(device, calls=200) -> tuple[float, float]:
    """(host us per launch with 4 arguments, with 28), median of `calls` launches, no sync between."""
    buf = torch.zeros(8, 16, device=device)
    ptrs = [buf[i] for i in range(8)]
    ints = list(range(3, 23))
    four = lambda: _touch4_kernel[(1,)](ptrs[0], 3, 5, N=16)  # noqa: E731
    many = lambda: _touch_kernel[(1,)](*ptrs, *ints, N=16)  # noqa: E731
    return _host_us(four, calls, device, sync_each=False), _host_us(many, calls, device, sync_each=False)


def profile_block(block, shape, dtype, layout, device, calls):
    mods = measure.make_modules(block, shape[1], device, dtype, ("eager", "fused"))
    rows, fused_prof = [], None
    for provider, module in mods.items():
        module.train(shape[0] > 1)
        xs = measure.make_inputs(block, shape, dtype, layout, device, requires_grad=True)
        dy = measure.output_like(module, xs)

        def forward():
            with torch.no_grad():
                module(*xs)

        def fwd_bwd():
            for t in xs:
                t.grad = None
            module(*xs).backward(dy)

        for pass_, fn in (("forward", forward), ("fwd+bwd", fwd_bwd)):
            host, wall = _timed(fn, calls, device)
            n, dev_us, prof = _kernels(fn, device)
            rows.append((provider, pass_, host, wall, n, dev_us))
            if provider == "fused" and pass_ == "fwd+bwd":
                fused_prof = prof
        bwd_host = []
        for _ in range(calls):  # the backward alone: its host time (the autograd engine's thread on CUDA)
            for t in xs:
                t.grad = None
            y = module(*xs)
            _sync(device)
            start = time.perf_counter()
            y.backward(dy)
            bwd_host.append((time.perf_counter() - start) * 1e6)
            _sync(device)
        rows.append((provider, "bwd alone", statistics.median(bwd_host), None, None, None))
    return rows, fused_prof


def cprofile_forward(block, shape, dtype, layout, device, calls, top=25):
    """cProfile's table of ``calls`` fused forward calls (no grad), by own time."""
    import cProfile
    import io
    import pstats

    module = measure.make_modules(block, shape[1], device, dtype, ("fused",))["fused"].train(shape[0] > 1)
    xs = measure.make_inputs(block, shape, dtype, layout, device, requires_grad=False)
    with torch.no_grad():
        module(*xs)
        _sync(device)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(calls):
            module(*xs)
        prof.disable()
    _sync(device)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default=None, help="B,C,H,W (default 64,256,56,56 on a GPU, 2,64,8,8 on CPU)")
    parser.add_argument("--blocks", default="se,eca,cbam")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--top", type=int, default=12, help="host ops listed per block")
    parser.add_argument("--cprofile", type=int, default=0, metavar="N",
                        help="cProfile N fused forward calls per block (0: none)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    default = "64,256,56,56" if device.type == "cuda" else "2,64,8,8"
    shape = tuple(int(v) for v in (args.shape or default).split(","))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"host profile: {name}, torch {torch.__version__}, {str(dtype)[6:]}, {list(shape)}, channels_last, "
          f"median of {args.calls} calls")
    print(f"{'block':8s}{'provider':10s}{'pass':11s}{'host us':>10s}{'wall us':>10s}{'kernels':>9s}{'device us':>11s}")
    for block in args.blocks.split(","):
        rows, prof = profile_block(block, shape, dtype, "channels_last", device, args.calls)
        for provider, pass_, host, wall, n, dev_us in rows:
            cell = lambda v, w: f"{'-':>{w}s}" if v is None else f"{v:{w}.1f}"  # noqa: E731
            print(f"{block:8s}{provider:10s}{pass_:11s}{host:10.1f}{cell(wall, 10)}{cell(n, 9)}{cell(dev_us, 11)}")
        if prof is not None and args.top:
            print(f"  fused {block} fwd+bwd, top host ops by self CPU time (5 calls):")
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=60)
            print("\n".join("    " + line for line in table.splitlines()))
        if args.cprofile:
            print(f"  fused {block} forward, cProfile of {args.cprofile} calls:")
            text = cprofile_forward(block, shape, dtype, "channels_last", device, args.cprofile)
            print("\n".join("    " + line for line in text.splitlines() if line.strip()))
    from fusedattn.backend import interpreter_enabled
    if device.type == "cuda" or interpreter_enabled():
        four, many = launch_cost_us(device)
        print(f"one Triton launch, host us (median of 200, no sync): 4 arguments {four:.1f}, 28 arguments {many:.1f}")


if __name__ == "__main__":
    main()
