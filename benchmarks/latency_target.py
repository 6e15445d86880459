"""Latency as the target: ``--target latency=0.5`` on the CPU provider, at batch 1 and 32, on
ResNet-50, MobileNetV2 and a BERT-style encoder (random weights); the latency each cut reached
(goal: within 5% of 0.5), and at the same latency the cosine to the original of the
latency-targeted cut against a ``--target macs`` cut tuned (by measurement) to the same latency.

    python benchmarks/latency_target.py [--models resnet50,mobilenetv2,bert] [--batches 1,32]

One model and batch at a time on this machine; the latency table is measured afresh for each
(``latency_cache off``: the table's own cost is part of the time shown). Cosine: the mean
cosine of the outputs to the original's on 16 random inputs (the models have no task here).
Needs the torch and transformers extras.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from rich.console import Console
from rich.table import Table

from onnxprune.api import prune
from onnxprune.errors import ConstraintError
from onnxprune.ir.runtime import random_feeds, session
from onnxprune.latency.measure import timed
from onnxprune.zoo.catalog import export_model

RESULTS = Path(__file__).parent / "results"
SEQ = 128


def bert(path: Path) -> Path:
    """A BERT-style encoder: hidden 256, 4 layers of 4 heads, FFN 1024 (random weights)."""
    import torch
    import transformers

    config = transformers.BertConfig(vocab_size=8000, hidden_size=256, num_hidden_layers=4,
                                     num_attention_heads=4, intermediate_size=1024,
                                     max_position_embeddings=SEQ)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.randint(0, 8000, (2, SEQ))
    mask = torch.ones(2, SEQ, dtype=torch.int64)
    axes = {n: {0: "batch", 1: "sequence"} for n in ("input_ids", "attention_mask", "hidden")}
    with torch.no_grad():
        torch.onnx.export(Wrapped(), (ids, mask), str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                          dynamic_axes=axes)
    return path


def _feeds(model: onnx.ModelProto, batch: int) -> dict:
    shapes = {i.name: [batch, SEQ] for i in model.graph.input if i.name != "pixel_values"
              and len(i.type.tensor_type.shape.dim) == 2}
    feeds = random_feeds(model, seed=5, batch=batch, shapes=shapes or None)
    return {k: (np.ones_like(v) if k == "attention_mask" else v) for k, v in feeds.items()}


def cosine(original: onnx.ModelProto, pruned: onnx.ModelProto, feeds: dict) -> float:
    a = session(original).run(None, feeds)[0].reshape(len(next(iter(feeds.values()))), -1)
    b = session(pruned).run(None, feeds)[0].reshape(a.shape[0], -1)
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1)
                                             * np.linalg.norm(b, axis=1) + 1e-30)))


def ratio(original: onnx.ModelProto, pruned: onnx.ModelProto, feeds: dict, seconds: float) -> float:
    kw = {"quiet": True, "optimized": True, "spinning": False}
    o, p = timed([session(original, **kw), session(pruned, **kw)], [feeds, feeds], seconds)
    return p["ms"] / o["ms"]


def macs_matched(path: Path, original, feeds, want: float, shapes, seconds: float) -> tuple:
    """A --target macs cut whose measured latency ratio is closest to ``want`` (bisection on
    the MAC fraction removed, by measurement)."""
    lo, hi, best = 0.0, 0.95, None
    for _ in range(6):
        mid = (lo + hi) / 2
        r = prune(path, target=f"macs={mid:.4f}", input_shapes=shapes, round_to=8)
        got = ratio(original, r.model, feeds, seconds)
        if best is None or abs(got - want) < abs(best[1] - want):
            best = (r, got, mid)
        lo, hi = (mid, hi) if got > want else (lo, mid)
        if abs(got - want) <= 0.05 * want:
            break
    return best


# the searches beside the default uniform cut, per model: blocks as candidates where channels
# alone cannot reach the target
VARIANTS = {"bert": {"sensitivity, --depth auto": {"strategy": "sensitivity", "depth": "auto",
                                                    "calib_random": 16}}}


def row(console, name: str, path: Path, batch: int, seconds: float, variant: str = "uniform",
        options: dict | None = None) -> dict:
    original = onnx.load(str(path))
    shapes = {i.name: [batch, SEQ] for i in original.graph.input
              if len(i.type.tensor_type.shape.dim) == 2} or None
    t = time.perf_counter()
    try:
        r = prune(path, target="latency=0.5", latency_batch=batch, latency_cache="off",
                  input_shapes=shapes, **(options or {}))
    except ConstraintError as err:  # exit 8: what the closest cut reached is the figure
        console.log(f"{name} batch {batch} ({variant}): {err}")
        return {"model": name, "batch": batch, "variant": variant, "achieved": None,
                "error": str(err), "seconds": round(time.perf_counter() - t, 1)}
    secs = time.perf_counter() - t
    lat = r.selection["latency"]
    feeds = _feeds(original, 16)
    bench = _feeds(original, batch)
    macs_cut, macs_ratio, macs_frac = macs_matched(path, original, bench, lat["achieved"],
                                                   shapes, seconds)
    out = {"model": name, "batch": batch, "variant": variant, "achieved": lat["achieved"],
           "blocks": [b["name"] for b in (r.depth or {}).get("removed", [])],
           "original_ms": lat["original_ms"], "pruned_ms": lat["pruned_ms"],
           "attempts": len(lat["attempts"]), "table_layers": lat["table"]["layers"],
           "table_widths": lat["table"]["measured"], "seconds": round(secs, 1),
           "cosine_latency": cosine(original, r.model, feeds),
           "macs_removed_latency": 1 - r.macs_after / r.macs_before,
           "macs_target": round(macs_frac, 4), "macs_ratio": macs_ratio,
           "cosine_macs": cosine(original, macs_cut.model, feeds),
           "within_5pct": abs(lat["achieved"] - 0.5) <= 0.025}
    console.log(f"{name} batch {batch}: latency {out['achieved']:.3f} of "
                f"{out['original_ms']:.2f} ms in {secs:.0f} s ({out['attempts']} cuts measured); "
                f"cosine {out['cosine_latency']:.4f} vs a MAC-targeted cut at latency "
                f"{macs_ratio:.3f}: {out['cosine_macs']:.4f}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,mobilenetv2,bert")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--seconds", type=float, default=1.0, help="per latency comparison")
    args = ap.parse_args()
    console = Console(width=150)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            path = Path(tmp) / f"{name}.onnx"
            if name == "bert":
                bert(path)
            else:
                export_model(name, path)
            for batch in (int(b) for b in args.batches.split(",")):
                rows.append(row(console, name, path, batch, args.seconds))
                for variant, options in VARIANTS.get(name, {}).items():
                    rows.append(row(console, name, path, batch, args.seconds, variant,
                                    options))
    table = Table(title="--target latency=0.5, CPU provider (a MAC target tuned to the same "
                  "latency beside it)", title_justify="left")
    for col in ("model", "search", "batch", "original ms", "reached", "cuts measured", "s",
                "cosine", "MAC-target cut: latency", "its cosine"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        if r["achieved"] is None:
            table.add_row(r["model"], r.get("variant", "uniform"), str(r["batch"]), "-",
                          "exit 8: " + r["error"].split("cannot be met: ")[-1].split(";")[0],
                          "-", f"{r['seconds']:.0f}", "-", "-", "-")
            continue
        table.add_row(r["model"], r.get("variant", "uniform"), str(r["batch"]),
                      f"{r['original_ms']:.2f}",
                      f"{r['achieved']:.3f}", str(r["attempts"]), f"{r['seconds']:.0f}",
                      f"{r['cosine_latency']:.4f}", f"{r['macs_ratio']:.3f}",
                      f"{r['cosine_macs']:.4f}")
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "latency_target.json"
    def key(r):
        return r["model"], r["batch"], r.get("variant", "uniform")

    done = {key(r) for r in rows}  # rows not rerun now stay
    kept = [r for r in (json.loads(path.read_text()) if path.exists() else [])
            if key(r) not in done]
    path.write_text(json.dumps(kept + rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
