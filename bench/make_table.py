"""Render the README's benchmark table from the newest GPU result file in bench/results/.

    python bench/make_table.py            # prints the table
    python bench/make_table.py --readme   # rewrites the table between the README's markers
"""
import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def newest_gpu_file() -> Path | None:
    files = []
    for f in (ROOT / "bench" / "results").glob("*.json"):
        doc = json.loads(f.read_text())
        if doc.get("device_type") == "cuda":
            files.append((doc["time"], f))
    return max(files)[1] if files else None


def table(path: Path, dtype="bfloat16", layout="channels_last") -> str:
    doc = json.loads(path.read_text())
    cells = defaultdict(dict)
    for r in doc["results"]:
        if r["dtype"] == dtype and r["layout"] == layout:
            cells[(r["block"], tuple(r["shape"]), r["pass_"])][r["provider"]] = r
    lines = [f"{doc['device']}, torch {doc['torch']}, triton {doc['triton']}, {dtype}, {layout}, "
             f"{doc['timing']} (file `{path.relative_to(ROOT)}`)", "",
             "| block | shape | pass | eager ms | compiled ms | fused ms | fused speed-up vs eager / compiled "
             "| fused / copy | fused GB/s | saved for bwd beyond x, eager / fused |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (block, shape, pass_), p in sorted(cells.items(), key=lambda kv: (kv[0][0], -kv[0][1][0], kv[0][1][1], kv[0][2])):
        if not {"eager", "compiled", "fused"} <= p.keys():
            continue
        e, c, f = p["eager"], p["compiled"], p["fused"]
        saved = "" if f["saved_bytes"] is None else f"{e['saved_bytes'] / 2**20:.2f} / {f['saved_bytes'] / 2**20:.2f} MiB"
        lines.append(f"| {block} | {'x'.join(map(str, shape))} | {pass_} | {e['ms']:.4f} | {c['ms']:.4f} | "
                     f"{f['ms']:.4f} | {e['ms'] / f['ms']:.2f}x / {c['ms'] / f['ms']:.2f}x | "
                     f"{f['copy_ratio']:.2f} | {f['bandwidth_gbs']:.0f} | {saved} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--readme", action="store_true")
    args = parser.parse_args()
    path = newest_gpu_file()
    text = table(path) if path else "No GPU result file yet: run `pytest bench --benchmark-only` on a CUDA GPU."
    if not args.readme:
        print(text)
        return
    readme = ROOT / "README.md"
    body = readme.read_text()
    body = re.sub(re.escape(START) + ".*?" + re.escape(END), START + "\n" + text + "\n" + END, body, flags=re.S)
    readme.write_text(body)


if __name__ == "__main__":
    main()
