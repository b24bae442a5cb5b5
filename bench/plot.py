"""Plot the newest GPU result file in bench/results/ (or the file given) to a PNG:

    python bench/plot.py [RESULT.json ...] [-o bench/results/plot.png]

Left: fused speed-up over eager and over torch.compile per block at batch 64 (bfloat16,
channels_last), forward and forward+backward. Right: the bundled ResNet-50s' attention
overhead (time / time of the plain ResNet-50 - 1) per provider, training step and inference.
"""
import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from make_table import ROOT, model_overheads, newest_gpu_file  # noqa: E402


def block_speedups(doc, dtype, layout):
    """{(block, pass): (speed-up vs eager, vs compiled)} at the largest batch of each block."""
    cells = defaultdict(dict)
    for r in doc["results"]:
        if r.get("kind") != "model" and r["dtype"] == dtype and r["layout"] == layout:
            cells[(r["block"], tuple(r["shape"]), r["pass_"])][r["provider"]] = r["ms"]
    best = {}
    for (block, shape, pass_), p in sorted(cells.items(), key=lambda kv: -kv[0][1][0] * kv[0][1][1]):
        if {"eager", "compiled", "fused"} <= p.keys() and (block, pass_) not in best:
            best[(block, pass_)] = (p["eager"] / p["fused"], p["compiled"] / p["fused"], shape)
    return best


def plot(paths: list[Path], out: Path, dtype="bfloat16", layout="channels_last") -> Path:
    """Render the results of ``paths`` (e.g. the newest block file and the newest model file)."""
    docs = [json.loads(p.read_text()) for p in dict.fromkeys(paths)]
    doc = dict(docs[-1], results=[r for d in docs for r in d["results"]])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5))
    speed = block_speedups(doc, dtype, layout)
    labels = [f"{b}\n{p}" for b, p in speed]
    xs = range(len(speed))
    ax1.bar([x - 0.2 for x in xs], [v[0] for v in speed.values()], 0.4, label="vs eager")
    ax1.bar([x + 0.2 for x in xs], [v[1] for v in speed.values()], 0.4, label="vs torch.compile")
    ax1.axhline(1.0, color="k", lw=0.8)
    ax1.set_xticks(list(xs), labels, fontsize=7)
    ax1.set_ylabel("fused speed-up (x)")
    shape = next(iter(speed.values()))[2] if speed else ()
    ax1.set_title(f"blocks, {dtype}, {layout}, largest case {list(shape)}", fontsize=9)
    ax1.legend()
    over = {(t, p): v for (network, t, p), v in model_overheads(doc).items() if network == "resnet50"}
    keys = sorted(over)
    attns = ["se", "eca", "cbam"]
    for i, attn in enumerate(attns):
        vals = [100 * (over[k].get(attn, (0, None))[1] or 0) for k in keys]
        ax2.bar([j + (i - 1) * 0.27 for j in range(len(keys))], vals, 0.27, label=attn.upper())
    ax2.set_xticks(range(len(keys)), [f"{t}\n{p}" for t, p in keys], fontsize=7)
    ax2.set_ylabel("attention overhead vs plain ResNet-50 (%)")
    ax2.set_title("bundled ResNet-50", fontsize=9)
    ax2.legend()
    fig.suptitle(f"fusedattn on {doc['device']} (torch {doc['torch']}, triton {doc['triton']}), {doc['time']}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("result", nargs="*", type=Path, help="result files (default: the newest GPU ones)")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "bench" / "results" / "plot.png")
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    paths = args.result or [p for p in (newest_gpu_file(models=False), newest_gpu_file(models=True)) if p]
    if not paths:
        raise SystemExit("no GPU result file in bench/results/ yet: run the bench sweep on a CUDA GPU")
    print(plot(paths, args.out, args.dtype))


if __name__ == "__main__":
    main()
