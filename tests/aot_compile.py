"""Compile every Triton kernel variant the launchers use for a real GPU target, on a machine
without one: the interpreter accepts code the compiler rejects (non-power-of-2 blocks, control
flow on tensors, dtype mixes), so this catches what CI under TRITON_INTERPRET cannot.

Run as a script (TRITON_INTERPRET must be unset, so the kernels are real JITFunctions):
    python tests/aot_compile.py [--arch 90] [--shapes small|all]
It runs the SE / ECA / CBAM / PSA / SK launchers on CPU tensors with kernel launches intercepted
(odd small shapes in every option; with --shapes all, the default, also the benchmarked ResNet-50
stage shapes as an H100 would tile them),
records each (kernel, argument types, constexprs, num_warps), then compiles each to a cubin
with triton.compile for the chosen arch and prints one line per variant (registers, spills
where the compiler reports them). Exit status 1 if any variant fails to compile.
"""
import argparse
import os
import sys

assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), "run without TRITON_INTERPRET"

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

TORCH_TO_TRITON = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
                   torch.float64: "fp64", torch.int32: "i32", torch.int64: "i64"}
CAPTURED: dict = {}


def _capture(self, *args, grid, warmup, **kwargs):
    names = self.arg_names
    bound = dict(zip(names, args))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    options = {k: v for k, v in kwargs.items() if k not in names}
    signature, constexprs = {}, {}
    for i, name in enumerate(names):
        value = bound[name]
        if i in self.constexprs:
            signature[name] = "constexpr"
            constexprs[name] = value
        elif isinstance(value, torch.Tensor):
            signature[name] = "*" + TORCH_TO_TRITON[value.dtype]
        elif isinstance(value, bool):
            signature[name] = "i1"
        elif isinstance(value, int):
            signature[name] = "i64" if abs(value) >= 2**31 else "i32"
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"{self.__name__}: cannot type argument {name}={value!r}")
    key = (self.__name__, tuple(signature.items()), tuple((k, str(v)) for k, v in constexprs.items()),
           tuple(sorted(options.items())))
    CAPTURED.setdefault(key, (self, signature, constexprs, options))


#: (B, C, H, W) cases with odd sizes (masks, tails), every dtype.
SMALL_SHAPES = ((4, 48, 7, 9), (2, 300, 3, 3))
#: The benchmarked ResNet-50 stage shapes (B kept at 2: tile sizes depend on C and H*W), so the
#: variants the GPU benchmarks launch are compiled and their spills reported too.
RESNET50_SHAPES = ((2, 256, 56, 56), (2, 512, 28, 28), (2, 1024, 14, 14), (2, 2048, 7, 7))


def exercise_launchers(shapes=SMALL_SHAPES, dtypes=(torch.float32, torch.bfloat16, torch.float16, torch.float64),
                       rd_div: int = 8, variants: bool = True) -> None:
    """Drive every launcher on CPU tensors (launches intercepted): each shape, dtype and layout;
    with ``variants`` also every option (bias, max pool, activation, ECA padding, P = 2, 3, 6)."""
    from fusedattn import kernels

    for dtype in dtypes:
        for layout in ("nchw", "channels_last"):
            for B, C, H, W in shapes:
                x = torch.randn(B, C, H, W).to(dtype)
                if layout == "channels_last":
                    x = x.to(memory_format=torch.channels_last)
                dy = torch.randn_like(x)
                RD = max(C // rd_div, 1)
                w1, w2 = torch.randn(RD, C, 1, 1), torch.randn(C, RD, 1, 1)
                b1, b2 = torch.randn(RD), torch.randn(C)
                for maxpool in (False, True) if variants else (False,):
                    for bias in (False, True) if variants else (True,):
                        out = kernels.se_forward(x, w1, b1 if bias else None, w2, b2 if bias else None, maxpool)
                        kernels.se_backward(dy, x, w1, w2, bias, *out[1:])
                for act in (0, 1, 2) if variants else (1,):  # the residual epilogue: none, ReLU, SiLU
                    out = kernels.se_forward(x, w1, b1, w2, b2, False, shortcut=dy, act=act)
                    kernels.se_backward(dy, x, w1, w2, True, *out[1:], act=act, out=out[0], shortcut=dy)
                    y, pooled, gate = kernels.eca_forward(x, torch.randn(1, 1, 3), None, False, shortcut=dy, act=act)
                    kernels.eca_backward(dy, x, torch.randn(1, 1, 3), False, False, pooled, gate, act, y, dy)
                for circular in (False, True) if variants else (False,):
                    for bias in (None, torch.randn(1)) if variants else (None,):
                        w = torch.randn(1, 1, 5)
                        y, pooled, gate = kernels.eca_forward(x, w, bias, circular)
                        kernels.eca_backward(dy, x, w, bias is not None, circular, pooled, gate)
                for bias in (False, True) if variants else (True,):
                    out = kernels.psa_forward([x] * 4, w1, b1 if bias else None, w2, b2 if bias else None)
                    dout = torch.randn(B, 4 * C, H, W).to(dtype)
                    kernels.psa_backward(dout, [x] * 4, w1, w2, bias, *out[1:])
                A = max(C // 16, 8)
                bn = [torch.rand(A) + 0.5 for _ in range(4)]  # gamma, beta, running mean, running var
                for P in (2, 3, 6) if variants else (2,):  # 6 paths: two launch groups
                    for training in (True, False):
                        wr, ws = torch.randn(A, C, 1, 1), torch.randn(P * C, A, 1, 1)
                        out = kernels.sk_forward([x] * P, wr, ws, *bn, training, 1e-5)
                        kernels.sk_backward(dy, [x] * P, wr, ws, bn[0], 1e-5, training, *out[1:])
                for bias in (False, True) if variants else (False,):
                    ca, pooled, hidden, maps = kernels.cbam_channel_forward(
                        x, w1, b1 if bias else None, w2, b2 if bias else None)
                    sa = torch.rand(B, 1, H, W, dtype=maps.dtype)
                    kernels.cbam_apply(x, ca, sa)
                    kernels.cbam_spatial_grad_inputs(dy, x, ca, maps)
                    kernels.cbam_channel_backward(dy, x, w1, w2, bias, ca, pooled, hidden, maps, sa,
                                                  torch.randn_like(sa), torch.randn_like(sa))


def ptxas_usage(ptx: str, arch: int) -> tuple[int, int]:
    """(registers per thread, spill store + load bytes) that ptxas reports for the PTX."""
    import re
    import subprocess
    import tempfile

    from triton.backends.nvidia import compiler as nv

    try:
        try:
            ptxas = nv.get_ptxas(arch).path  # triton >= 3.7
        except TypeError:
            ptxas = nv.get_ptxas().path
        with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
            f.write(ptx)
            f.flush()
            out = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{arch}a", f.name, "-o", os.devnull],
                                 capture_output=True, text=True).stderr
    except Exception:  # noqa: BLE001 - the usage report is informative only
        return -1, 0
    regs = sum(int(r) for r in re.findall(r"Used (\d+) registers", out))
    spills = sum(int(a) + int(b) for a, b in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", out))
    return regs, spills


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 (H100)")
    parser.add_argument("--shapes", choices=("small", "all"), default="all",
                        help="small: odd shapes in every variant; all: also the ResNet-50 stage shapes")
    args = parser.parse_args(argv)
    JITFunction.run = _capture
    from fusedattn.kernels import config

    config.target_programs = 64
    exercise_launchers()
    if args.shapes == "all":  # as on an H100: 132 SMs, 50 MB of L2
        config.target_programs, config.chunk_bytes = 4 * 132, 25 * 2**20
        exercise_launchers(RESNET50_SHAPES, (torch.float32, torch.bfloat16), rd_div=16, variants=False)
    target = GPUTarget("cuda", args.arch, 32)
    failures = total_spills = 0
    for (name, *_), (fn, signature, constexprs, options) in sorted(CAPTURED.items(), key=lambda kv: kv[0][0]):
        modes = ",".join(f"{k}={v}" for k, v in constexprs.items() if not isinstance(v, tl.dtype) and k.isupper())
        modes = f"{next(iter(signature.values()))[1:]:4s} " + modes  # the first pointer's dtype
        try:
            compiled = triton.compile(ASTSource(fn, signature, constexprs), target=target, options=options)
            regs, spills = ptxas_usage(compiled.asm["ptx"], args.arch)
            total_spills += spills
            print(f"ok   sm_{args.arch} {name:34s} regs={regs:3d} spill_bytes={spills:4d}  {modes}")
        except Exception as e:  # noqa: BLE001 - report every failing variant
            failures += 1
            print(f"FAIL sm_{args.arch} {name:38s} {modes}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
    print(f"{len(CAPTURED) - failures} compiled, {failures} failed (kernel variants for sm_{args.arch}); "
          f"{total_spills} spill bytes in all")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
