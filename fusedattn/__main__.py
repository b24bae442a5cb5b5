"""``python -m fusedattn``: environment, per-block correctness against the reference, timings.

On a GPU: the fused blocks (Triton) vs the reference in eager mode and under
torch.compile, forward and forward+backward. On CPU: the reference vs the fused
block's plain-PyTorch path, plus a small check of the Triton kernels under Triton's
interpreter (run in a subprocess, since TRITON_INTERPRET must be set at import).
"""
import argparse
import os
import platform
import subprocess
import sys

import torch
import triton

from . import benchmark
from .backend import get_backend, interpreter_enabled, use_backend, uses_triton


def max_errors(block: str, device, dtype, shape, layout="channels_last") -> tuple[float, float]:
    """(max |y - y_ref|, max |dx - dx_ref|) of the fused block in dtype vs the reference in float64."""
    mods = benchmark.make_modules(block, shape[1], device, torch.float64, providers=("eager", "fused"))
    ref, fused = mods["eager"].eval(), mods["fused"].to(dtype).eval()  # BN: the same (running) statistics
    xs = benchmark.make_inputs(block, shape, dtype, layout, device, requires_grad=True)
    y = fused(*xs)
    dy = torch.randn_like(y)
    y.backward(dy)
    xs64 = [x.detach().double().requires_grad_(True) for x in xs]
    y64 = ref(*xs64)
    y64.backward(dy.double())
    return ((y.double() - y64).abs().max().item(),
            max((x.grad.double() - x64.grad).abs().max().item() for x, x64 in zip(xs, xs64)))


def print_environment(device) -> None:
    print("fusedattn environment")
    print(f"  python {platform.python_version()}, torch {torch.__version__}, triton {triton.__version__}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"  device: {device} ({name})")
    print(f"  backend setting: {get_backend()} (FUSEDATTN_BACKEND), Triton interpreter: {interpreter_enabled()}")
    probe = torch.empty(1, device=device)   # one sample (an empty batch takes the plain path anywhere)
    for block in benchmark.BLOCKS:
        path = "Triton kernels" if uses_triton(probe) else "plain-PyTorch path"
        print(f"  {block}: {path} on {device.type} tensors")


def interpreter_check() -> int:
    """Run each block's Triton kernels under the interpreter on a tiny shape."""
    print("Triton kernels under the interpreter (float64, [2, 64, 5, 7], channels_last):")
    with use_backend("triton"):
        worst = 0.0
        for block in benchmark.BLOCKS:
            ey, edx = max_errors(block, torch.device("cpu"), torch.float64, (2, 64, 5, 7))
            worst = max(worst, ey, edx)
            print(f"  {block:12s} max|y - ref| = {ey:.2e}   max|dx - ref| = {edx:.2e}")
    return 0 if worst < 1e-9 else 1


def timing_table(device, dtype, shape, layout, compile_reference=True) -> None:
    providers = benchmark.PROVIDERS if device.type == "cuda" and compile_reference else ("eager", "fused")
    print(f"\nTimings, median ms ({device.type}, {str(dtype)[6:]}, {list(shape)}, {layout}):")
    print(f"  {'block':13s}{'pass':10s}" + "".join(f"{p:>12s}" for p in providers))
    for block in benchmark.BLOCKS:
        mods = benchmark.make_modules(block, shape[1], device, dtype, providers)
        xs = benchmark.make_inputs(block, shape, dtype, layout, device, requires_grad=True)
        dy = benchmark.output_like(mods["eager"], xs)
        for name, make in (("forward", lambda m: benchmark.forward_fn(m, xs)),
                           ("fwd+bwd", lambda m: benchmark.forward_backward_fn(m, xs, dy))):
            row = []
            for p in providers:
                grads = xs + list(mods[p].parameters())
                row.append(benchmark.time_ms(make(mods[p]), device, grad_to_none=grads))
            print(f"  {block:13s}{name:10s}" + "".join(f"{t:12.4f}" for t in row))


def case_shape(text: str) -> tuple[int, int, int, int]:
    """argparse type of --shape: B,C,H,W, four positive integers, C a multiple of 64 (the table's
    PSA splits C four ways into groups of up to 16)."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1 or shape[1] % 64:
        raise argparse.ArgumentTypeError(
            f"expected B,C,H,W: four positive integers, C a multiple of 64 (e.g. 8,64,28,28), got {text!r}")
    return shape


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusedattn", description=__doc__.splitlines()[0])
    parser.add_argument("--interpreter-check", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shape", type=case_shape, default=None,
                        help="timing case B,C,H,W (default: 64,256,56,56 on a GPU, 8,64,28,28 on CPU)")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave torch.compile out of the timing table (it compiles every block twice)")
    args = parser.parse_args(argv)
    if args.interpreter_check:
        return interpreter_check()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print_environment(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    print(f"\nFused ({str(dtype)[6:]}) vs reference (float64), [4, 64, 14, 14] channels_last:")
    for block in benchmark.BLOCKS:
        ey, edx = max_errors(block, device, dtype, (4, 64, 14, 14))
        print(f"  {block:12s} max|y - ref| = {ey:.2e}   max|dx - ref| = {edx:.2e}")
    status = 0
    if device.type == "cpu":
        sys.stdout.flush()
        env = dict(os.environ, TRITON_INTERPRET="1")
        status = subprocess.call([sys.executable, "-m", "fusedattn", "--interpreter-check"], env=env)
    default = (64, 256, 56, 56) if device.type == "cuda" else (8, 64, 28, 28)
    shape = args.shape or default
    timing_table(device, dtype, shape, "channels_last", compile_reference=not args.no_compile)
    return status


if __name__ == "__main__":
    sys.exit(main())
