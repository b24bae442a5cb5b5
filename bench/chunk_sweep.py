"""The L2 chunk budget, measured: SE and CBAM captured in CUDA graphs (the plan in which the
launchers walk the batch in L2 chunks of samples) with chunks of L2/8, L2/4 and L2/2, forward and
forward+backward at the ResNet-50 stage shapes; the fastest share per case and over all cases
(lowest geometric mean) recorded.

    python bench/chunk_sweep.py [--blocks se,cbam] [--shapes 64,256,56,56 64,512,28,28] [--out FILE]

On a GPU: bfloat16, channels_last, the module captured afresh for each share (a captured graph
keeps the chunk plan of its capture), times by ``fusedattn.benchmark.time_ms`` (CUDA events, L2
flushed between runs), every share's result compared with the first's (the chunk plan changes
the H*W split of the pool, so the order of a sum, not more: within ``AGREE`` by relative norm). Where the fastest share is not the profile's default (kernels/config.GPUProfile,
0.5), set it with FUSEDATTN_CHUNK_FRACTION or change the default with these figures.
Without a GPU (the tests, Triton's interpreter) it runs eager calls with the chunks forced on and an
L2 of 8 samples, so the three shares give chunks of 1, 2 and 4 samples.
"""
import argparse
import json
import math
import sys

import torch

from fusedattn import backend
from fusedattn import benchmark as measure
from fusedattn.kernels import config

FRACTIONS = (1 / 8, 1 / 4, 1 / 2)
#: ResNet-50 stage outputs at batch 64: the shapes whose x exceeds a chunk somewhere in the sweep
STAGE_SHAPES = ((64, 256, 56, 56), (64, 512, 28, 28), (64, 1024, 14, 14), (64, 2048, 7, 7))
PASSES = ("forward", "fwd+bwd")
#: Relative norm difference two chunk plans' results may have (sums in another order, then rounded)
AGREE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def chunk_plan(shape, dtype: torch.dtype, fraction: float, profile: config.GPUProfile) -> tuple[int, int]:
    """(samples per chunk, chunks) of a captured call at this share of the profile's L2."""
    per_sample = math.prod(shape[1:]) * dtype.itemsize
    samples = max(1, min(shape[0], int(profile.l2_bytes * fraction) // per_sample))
    return samples, -(-shape[0] // samples)


def _callable(block: str, shape, dtype, device, pass_: str):
    """(fn, output getter) for one fused call of the case: captured in a CUDA graph on a GPU, an
    eager call with the chunks forced on elsewhere; fresh inputs drawn from the current seed."""
    module = measure.make_modules(block, shape[1], device, dtype, providers=("fused",))["fused"]
    module.train(shape[0] > 1)
    xs = measure.make_inputs(block, shape, dtype, "channels_last", device, requires_grad=pass_ == "fwd+bwd")
    if device.type == "cuda":
        module = measure.graphed(module, xs)
    dy = measure.output_like(module, xs)
    result = {}

    def run():
        if pass_ == "forward":
            with torch.no_grad():
                result["y"] = module(*xs)
        else:
            for x in xs:
                x.grad = None
            module(*xs).backward(dy)
            result["y"] = xs[0].grad
    return run, lambda: result["y"].detach().clone(), xs


def sweep(blocks, shapes, dtype, device, fractions=FRACTIONS, profile: config.GPUProfile | None = None,
          seed: int = 0) -> dict:
    """Rows (block, shape, pass, share, chunk plan, ms, the result's difference from the first
    share's) and the fastest share per case and overall."""
    on_gpu = device.type == "cuda"
    rows = []
    saved = (config.chunk_fraction, config.l2_chunks, config.profile)
    try:
        for block in blocks:
            for shape in shapes:
                p = profile or config.device_profile(device) or config.PROFILES["h100"]
                if not on_gpu:   # an L2 of 8 samples: chunks of 1, 2 and 4 samples
                    p = p._replace(l2_bytes=8 * math.prod(shape[1:]) * dtype.itemsize)
                    config.profile, config.l2_chunks = p, True
                for pass_ in PASSES:
                    first = None
                    for fraction in fractions:
                        config.chunk_fraction = fraction
                        torch.manual_seed(seed)   # the same inputs and weights for every share
                        run, output, xs = _callable(block, shape, dtype, device, pass_)
                        ms = measure.time_ms(run, device, grad_to_none=xs, reps=3)
                        run()
                        y = output().double()
                        first = y if first is None else first
                        diff = float((y - first).norm() / first.norm())
                        samples, chunks = chunk_plan(shape, dtype, fraction, p)
                        rows.append(dict(block=block, shape=list(shape), pass_=pass_, fraction=fraction,
                                         chunk_mb=p.l2_bytes * fraction / 2**20, samples_per_chunk=samples,
                                         chunks=chunks, ms=ms, difference=diff,
                                         same_result=diff <= AGREE[dtype]))
    finally:
        config.chunk_fraction, config.l2_chunks, config.profile = saved
    return summarize(rows, fractions)


def summarize(rows: list[dict], fractions=FRACTIONS) -> dict:
    """The fastest share per case, each share's geometric mean of ms over the cases, the best."""
    fastest = {}
    for r in rows:
        key = f"{r['block']} {'x'.join(map(str, r['shape']))} {r['pass_']}"
        if key not in fastest or r["ms"] < fastest[key][1]:
            fastest[key] = (r["fraction"], r["ms"])
    geomean = {f: math.exp(sum(math.log(r["ms"]) for r in rows if r["fraction"] == f)
                           / max(1, sum(r["fraction"] == f for r in rows))) for f in fractions}
    return {"rows": rows, "fastest": {k: v[0] for k, v in fastest.items()}, "geomean_ms": geomean,
            "best_fraction": min(geomean, key=geomean.get)}


def table(result: dict) -> str:
    lines = ["| block | shape | pass | " + " | ".join(f"L2 x {f:g} ms (chunks)" for f in result["geomean_ms"])
             + " | fastest |", "|---|---|---|" + "---|" * (len(result["geomean_ms"]) + 1)]
    cases: dict = {}
    for r in result["rows"]:
        cases.setdefault((r["block"], "x".join(map(str, r["shape"])), r["pass_"]), []).append(r)
    for (block, shape, pass_), rs in cases.items():
        cells = " | ".join(f"{r['ms']:.4f} ({r['chunks']}){'' if r['same_result'] else ' DIFFERS'}" for r in rs)
        lines.append(f"| {block} | {shape} | {pass_} | {cells} | L2 x {result['fastest'][f'{block} {shape} {pass_}']:g} |")
    lines.append("| geometric mean | | | " + " | ".join(f"{v:.4f}" for v in result["geomean_ms"].values())
                 + f" | L2 x {result['best_fraction']:g} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", default="se,cbam")
    parser.add_argument("--shapes", nargs="+", default=[",".join(map(str, s)) for s in STAGE_SHAPES])
    parser.add_argument("--out", help="JSON file for the rows and the fastest shares")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes]
    with backend.use_backend("triton"):
        result = sweep(args.blocks.split(","), shapes, dtype, device)
    import triton
    result.update(device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu", dtype=str(dtype)[6:],
                  layout="channels_last", torch=torch.__version__, triton=triton.__version__,
                  l2_bytes=(config.device_profile(device) or config.PROFILES["h100"]).l2_bytes)
    print(table(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if all(r["same_result"] for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
