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


def newest_gpu_file(models: bool | None = None) -> Path | None:
    """The newest CUDA result file (with model rows if models, with block rows if not models)."""
    files = []
    for f in (ROOT / "bench" / "results").glob("*.json"):
        doc = json.loads(f.read_text())
        if "results" not in doc:  # the cost model's files (model-<profile>-<date>.json)
            continue
        has_models = any(r.get("kind") == "model" for r in doc["results"])
        has_blocks = any(r.get("kind") != "model" for r in doc["results"])
        if doc.get("device_type") == "cuda" and (models is None or (has_models if models else has_blocks)):
            files.append((doc["time"], f))
    return max(files)[1] if files else None


def table(path: Path, dtype="bfloat16", layout="channels_last", models_path: Path | None = None) -> str:
    doc = json.loads(path.read_text())
    if models_path is not None and models_path != path:
        doc["results"] = [r for r in doc["results"] if r.get("kind") != "model"] + \
            [r for r in json.loads(models_path.read_text())["results"] if r.get("kind") == "model"]
    cells = defaultdict(dict)
    for r in doc["results"]:
        if r["dtype"] == dtype and r["layout"] == layout:
            cells[(r["block"], tuple(r["shape"]), r["pass_"])][r["provider"]] = r
    lines = [f"{doc['device']}, torch {doc['torch']}, triton {doc['triton']}, {dtype}, {layout}, "
             f"{doc['timing']} (file `{path.relative_to(ROOT)}`)", "", *([doc["notes"], ""] if "notes" in doc else []),
             "| block | shape | pass | eager ms | compiled ms | fused ms | fused in a CUDA graph ms "
             "| fused speed-up vs eager / compiled | fused / copy | fused GB/s | saved for bwd beyond x, eager / fused |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (block, shape, pass_), p in sorted(cells.items(), key=lambda kv: (kv[0][0], -kv[0][1][0], kv[0][1][1], kv[0][2])):
        if block.startswith("resnet"):
            continue
        if not {"eager", "compiled", "fused"} <= p.keys():
            continue
        e, c, f = p["eager"], p["compiled"], p["fused"]
        saved = "" if f["saved_bytes"] is None else f"{e['saved_bytes'] / 2**20:.2f} / {f['saved_bytes'] / 2**20:.2f} MiB"
        graphed = f"{p['cuda_graph']['ms']:.4f}" if "cuda_graph" in p else ""
        lines.append(f"| {block} | {'x'.join(map(str, shape))} | {pass_} | {e['ms']:.4f} | {c['ms']:.4f} | "
                     f"{f['ms']:.4f} | {graphed} | {e['ms'] / f['ms']:.2f}x / {c['ms'] / f['ms']:.2f}x | "
                     f"{f['copy_ratio']:.2f} | {f['bandwidth_gbs']:.0f} | {saved} |")
    return "\n".join(lines + [""] + model_table(doc))


def model_overheads(doc) -> dict:
    """{(network, task, provider): {attn: (images/s, attention overhead vs the same network without
    attention)}}; network: resnet50 (the bundled one) or a timm model name."""
    ms = defaultdict(dict)
    for r in doc["results"]:
        if r.get("kind") == "model":
            network, attn = r["block"].split("-", 1)
            ms[(network, r["pass_"], r["provider"])][attn] = r
    out = {}
    for key, rows in ms.items():
        plain = rows.get("plain")
        out[key] = {a: (r["images_per_s"], r["ms"] / plain["ms"] - 1 if plain else None) for a, r in rows.items()}
    return out


def model_table(doc) -> list[str]:
    table = model_overheads(doc)
    if not table:
        return []
    shape = next(r["shape"] for r in doc["results"] if r.get("kind") == "model")
    lines = [f"Whole networks, batch {shape[0]}, {shape[2]}x{shape[3]}, channels_last, "
             f"{next(r['dtype'] for r in doc['results'] if r.get('kind') == 'model')}: images/s "
             "(attention overhead = time / time of the same network without attention, same provider - 1)", "",
             "| network | task | provider | plain | SE | ECA | CBAM |", "|---|---|---|---|---|---|---|"]
    for (network, task, provider), rows in sorted(table.items()):
        cells = []
        for attn in ("plain", "se", "eca", "cbam"):
            if attn not in rows:
                cells.append("")
                continue
            ips, over = rows[attn]
            cells.append(f"{ips:.0f}" + ("" if attn == "plain" or over is None else f" (+{100 * over:.1f}%)"))
        lines.append(f"| {network} | {task} | {provider} | " + " | ".join(cells) + " |")
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--readme", action="store_true")
    args = parser.parse_args()
    path, models_path = newest_gpu_file(models=False) or newest_gpu_file(), newest_gpu_file(models=True)
    text = table(path, models_path=models_path) if path else "No GPU result file yet: run `pytest bench --benchmark-only` on a CUDA GPU."
    if not args.readme:
        print(text)
        return
    readme = ROOT / "README.md"
    body = readme.read_text()
    body = re.sub(re.escape(START) + ".*?" + re.escape(END), START + "\n" + text + "\n" + END, body, flags=re.S)
    readme.write_text(body)


if __name__ == "__main__":
    main()
