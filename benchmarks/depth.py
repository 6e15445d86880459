"""Depth against width: 25% of the residual blocks removed (by Block Influence, by the metric
re-scored after each removal) against a width-only cut of the same parameters and the search
that chooses blocks and channels together (--depth auto), on two trained models, with held-out quality before and after distillation and batch-1/batch-32 latency;
onnxsim 0.8.1's block pruning on the same models in the same table.

    python benchmarks/depth.py [--cache /tmp/onnxprune-lm] [--seconds 2]

Models (trained in code): a residual digits classifier (6 basic blocks with identity shortcuts,
one plain downsampling conv between its two stages), accuracy on the 450 held-out test images;
the zoo's causal LM (``onnxprune.zoo.causal_lm``: a Llama of 4 layers, 8 sub-blocks, byte
vocabulary, trained on the standard library's sources; cached in ``--cache``), perplexity on
held-out files. Calibration: 256 training images / 256 windows of calibration files. Latency:
onnxruntime CPU, every model of a table measured side by side in one run (``bench.run_bench``),
median per run of one batch. Needs the bench and transformers extras (onnxsim 0.8.1).
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
import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.nn import functional as F

from onnxprune.analysis.size import graph_params
from onnxprune.api import analyze, prune
from onnxprune.bench.runner import run_bench
from onnxprune.ir.graph import import_model
from onnxprune.ir.runtime import session
from onnxprune.zoo import causal_lm as lm
from onnxprune.zoo.digits import digits28
from onnxprune.zoo.train import _train, accuracy, export, predict

RESULTS = Path(__file__).parent / "results"
SHARE = 0.25  # of the removable blocks


class Basic(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                               nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))

    def forward(self, x):
        return F.relu(x + self.f(x))


class ResDigits(nn.Module):
    """Stem (stride 2), 3 blocks of 16 channels, a plain downsampling conv, 3 blocks of 32."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            *[Basic(16) for _ in range(3)],
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            *[Basic(32) for _ in range(3)],
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)


def _onnxsim(path: Path, calib: list[dict], blocks: int, out: Path) -> tuple[Path | None, str]:
    """onnxsim 0.8.1's apply_transformer_block_pruning, asked for the same number of blocks."""
    try:
        from onnxsim.pruning import apply_transformer_block_pruning
    except ImportError:
        return None, "onnxsim not installed (pip install onnxsim==0.8.1)"
    model = onnx.load(str(path))
    try:
        pruned = apply_transformer_block_pruning(model, calibration_data=calib,
                                                 num_blocks_to_drop=blocks)
    except Exception as err:  # noqa: BLE001 - reported in the table
        return None, f"failed: {str(err).splitlines()[0][:120]}"
    before, after = len(model.graph.node), len(pruned.graph.node)
    if after == before:
        return None, "left the model unchanged (no block matched)"
    onnx.save(pruned, str(out))
    kept = sum(int(np.prod(t.dims)) for t in pruned.graph.initializer)
    return out, f"removed {before - after} nodes, {kept:,} initializer elements left"


def _params(path: Path) -> int:
    return graph_params(import_model(onnx.load(str(path))))


def _latency(paths: dict[str, Path], shapes, seconds: float) -> dict[str, dict[int, float]]:
    names = list(paths)
    report = run_bench([str(paths[n]) for n in names], batches=[1, 32], seconds=seconds,
                       input_shapes=shapes, names=names, notice=lambda _: None)
    out: dict[str, dict[int, float]] = {n: {} for n in names}
    for row in report.rows:
        out[row.model][row.batch] = row.p50
    return out


def classifier_table(console: Console, tmp: Path, seconds: float) -> dict:
    x, y = digits28("train")
    x_test, y_test = digits28("test")
    t = time.perf_counter()
    trained = _train(ResDigits, x, y, F.cross_entropy,
                     lambda m: accuracy(predict(m, x_test), y_test), epochs=15, seed=0,
                     lr=1e-2, batch=32, weight_decay=1e-4, threads=2, progress=False,
                     name="resdigits")
    console.log(f"residual classifier: test accuracy {trained.score:.3f} "
                f"({time.perf_counter() - t:.0f} s of training)")
    path = Path(export(trained.model, tmp / "resdigits.onnx", (1, 28, 28)))
    calib = {"input": x[:256], "labels": y[:256]}

    def quality(p: Path) -> float:
        logits = session(onnx.load(str(p))).run(None, {"input": x_test})[0]
        return accuracy(logits, y_test)

    return _table(console, "residual digits classifier", path, calib, quality, "accuracy",
                  {"metric": "accuracy"}, {"strategy": "sensitivity", "metric": "accuracy"},
                  {"input": [1, 1, 28, 28]}, [{"input": x[:32]}], tmp, seconds,
                  base_params=_params(path))


def lm_table(console: Console, tmp: Path, seconds: float, cache: str, steps: int) -> dict:
    model = lm.trained(cache, log=console.log)
    path = lm.export(model, tmp / "lm.onnx")
    calib = lm.windows("calib", 256, 128, seed=1)
    held = lm.windows("heldout", 256, 128)
    opts = {"metric": "perplexity", "distill_steps": steps}
    return _table(console, "causal LM (Llama, 4 layers)", path, calib,
                  lambda p: lm.perplexity(p, held), "perplexity", opts,
                  {"strategy": "sensitivity", "criterion": "activation", **opts},
                  {"input_ids": [1, 128], "attention_mask": [1, 128]},
                  [{k: v[:4] for k, v in calib.items()}], tmp, seconds,
                  base_params=_params(path))


def _table(console, title, path, calib, quality, metric_name, depth_opts, width_opts, shapes,
           sim_calib, tmp, seconds, base_params) -> dict:
    removable = [b for b in analyze(path).blocks if b.removable]
    k = max(1, round(SHARE * len(removable)))
    rows, paths = [], {"original": path}
    base = quality(path)
    rows.append({"row": "original", "params": base_params, "quality": base})
    runs = {
        f"depth: {k} of {len(removable)} blocks by influence": {"remove_blocks": k,
                                                                 **depth_opts},
        f"depth: {k} of {len(removable)} blocks by the metric (iterative)": {
            "remove_blocks": k, "block_score": "iterative", **depth_opts},
    }
    target = None
    for name, opts in list(runs.items()) + [("width", None), ("mixed", None)]:
        if name == "width":  # the width-only cut of the parameters the first depth cut removed
            name = f"width: {target:.1%} of the parameters ({width_opts['strategy']})"
            opts = {"target_params": target, **width_opts}
        elif name == "mixed":  # the same search choosing blocks and channels together
            name = f"depth + width: {target:.1%} of the parameters (sensitivity, --depth auto)"
            opts = {"target_params": target, **width_opts, "depth": "auto"}
        out = tmp / f"{len(rows)}.onnx"
        t = time.perf_counter()
        r = prune(path, out, calib=calib, **{k2: v for k2, v in opts.items()
                                             if k2 != "distill_steps"})
        secs = time.perf_counter() - t
        d = tmp / f"{len(rows)}d.onnx"
        t = time.perf_counter()
        prune(path, d, calib=calib, recover="distill", **opts)
        dsecs = time.perf_counter() - t
        removed = 1 - r.params_after / r.params_before
        if target is None:
            target = removed
        rows.append({"row": name, "params": r.params_after, "removed": removed,
                     "quality": quality(out), "distilled": quality(d),
                     "seconds": round(secs, 1), "distill_seconds": round(dsecs, 1),
                     "blocks": [b["name"] for b in (r.depth or {}).get("removed", [])]})
        paths[name] = out
        console.log(f"{title}: {name}: {metric_name} {rows[-1]['quality']:.4g} -> distilled "
                    f"{rows[-1]['distilled']:.4g}, {removed:.1%} of the parameters, "
                    f"{secs:.0f} s")
    sim, what = _onnxsim(path, sim_calib, k, tmp / "onnxsim.onnx")
    row = {"row": f"onnxsim 0.8.1 block pruning ({k} blocks)", "note": what}
    if sim is not None:
        row.update(params=_params(sim), quality=quality(sim))
        paths[row["row"]] = sim
    rows.append(row)
    lat = _latency(paths, shapes, seconds)
    for r in rows:
        if r["row"] in lat:
            r["ms_b1"], r["ms_b32"] = lat[r["row"]].get(1), lat[r["row"]].get(32)
    return {"title": title, "metric": metric_name, "base": base, "rows": rows}


def show(console: Console, tables: list[dict]) -> None:
    for t in tables:
        table = Table(title=f"{t['title']}: held-out {t['metric']} (original {t['base']:.4g})",
                      title_justify="left")
        for col in ("cut", "params", t["metric"], "+ distill", "ms b1", "ms b32", "note"):
            table.add_column(col, justify="left" if col in ("cut", "note") else "right")
        for r in t["rows"]:
            table.add_row(r["row"], f"{r['params']:,}" if "params" in r else "-",
                          f"{r['quality']:.4g}" if "quality" in r else "-",
                          f"{r['distilled']:.4g}" if "distilled" in r else "-",
                          f"{r['ms_b1']:.3f}" if r.get("ms_b1") else "-",
                          f"{r['ms_b32']:.2f}" if r.get("ms_b32") else "-", r.get("note", ""))
        console.print(table)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "onnxprune-lm"))
    ap.add_argument("--seconds", type=float, default=2.0, help="per model and batch")
    ap.add_argument("--distill-steps", type=int, default=300)
    ap.add_argument("--models", default="classifier,lm")
    args = ap.parse_args()
    console = Console(width=160)
    torch.manual_seed(0)
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        if "classifier" in args.models:
            tables.append(classifier_table(console, Path(tmp), args.seconds))
        if "lm" in args.models:
            tables.append(lm_table(console, Path(tmp), args.seconds, args.cache,
                                   args.distill_steps))
    show(console, tables)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "depth.json").write_text(json.dumps(tables, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
