"""Candidate evaluation on local, process-pool and local-Ray executors, side by side.

    python benchmarks/executors.py [--workers 2]

For the MNIST-style autoencoder (256 calibration images) and a ResNet-50-sized network (4
images at 224x224): the time to score a fixed set of random candidate masks on each executor
(pool start-up reported apart), candidates per second per worker, and the wall time of a full
sensitivity search on the autoencoder. Local runs one onnxruntime session with its default
threads; pool workers run one thread each. Needs torch (models), scikit-learn (digits) and
Ray (the ray extra; skipped when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from onnxprune.api import prune
from onnxprune.ir.graph import export_model
from onnxprune.pipeline.build import analysis_front
from onnxprune.search.evaluate import Evaluator
from onnxprune.search.executors import make_pool
from onnxprune.search.quality import get_metric
from onnxprune.zoo.digits import digits28
from onnxprune.zoo.torch_zoo import export_zoo_model
from onnxprune.zoo.train import export, train_autoencoder

RESULTS = Path(__file__).parent / "results"


def executors() -> list[str]:
    try:
        import ray  # noqa: F401

        return ["local", "process", "ray"]
    except ImportError:
        return ["local", "process"]


def score_candidates(path, calib, metric, n_masks, workers, console) -> list[dict]:
    ctx, _ = analysis_front(path, (), "none", None, "own", None)
    rng = np.random.default_rng(0)
    rows = []
    for kind in executors():
        ev = Evaluator(export_model(ctx.graph), ctx.analysis, calib, get_metric(metric))
        masks = (rng.random((n_masks, ctx.analysis.num_units)) > 0.3).astype(np.float32)
        t0 = time.perf_counter()
        if kind != "local":
            ev.attach(make_pool(kind, ev, workers=workers))
            ev.evaluate_many(masks[:workers])  # warm the workers up (sessions built)
        t1 = time.perf_counter()
        ev.evaluate_many(masks)
        t2 = time.perf_counter()
        ev.close()
        n = 1 if kind == "local" else workers
        rows.append({"executor": kind, "workers": n, "startup_s": t1 - t0,
                     "seconds": t2 - t1, "candidates": n_masks,
                     "per_second": n_masks / (t2 - t1),
                     "per_second_per_worker": n_masks / (t2 - t1) / n})
        console.log(rows[-1])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    console = Console(width=140)
    x_train, _ = digits28("train")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        ae = export(train_autoencoder(30).model, Path(tmp) / "ae.onnx", (1, 28, 28))
        ae_calib = {"input": x_train[:256]}
        results["autoencoder"] = score_candidates(ae, ae_calib, "psnr", 96, args.workers,
                                                  console)
        r50 = export_zoo_model("resnet50", str(Path(tmp) / "r50.onnx"), dynamic_batch=True)
        img = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
        results["resnet50"] = score_candidates(r50, {"input": img}, "cosine", 16, args.workers,
                                               console)
        searches = []
        for kind in executors():
            t0 = time.perf_counter()
            r = prune(ae, strategy="sensitivity", target_params=0.6, calib=ae_calib,
                      metric="psnr", executor=kind, workers=args.workers)
            searches.append({"executor": kind, "seconds": time.perf_counter() - t0,
                             "psnr": r.quality["after"]})
            console.log(searches[-1])
        results["autoencoder_sensitivity_search"] = searches
    table = Table(title=f"candidate evaluation, {args.workers} workers on {os.cpu_count()} CPUs")
    for col in ("model", "executor", "start-up s", "candidates", "s", "cand/s", "cand/s/worker"):
        table.add_column(col, justify="right")
    for model in ("autoencoder", "resnet50"):
        for r in results[model]:
            table.add_row(model, r["executor"], f"{r['startup_s']:.2f}", str(r["candidates"]),
                          f"{r['seconds']:.2f}", f"{r['per_second']:.1f}",
                          f"{r['per_second_per_worker']:.1f}")
    console.print(table)
    for s in results["autoencoder_sensitivity_search"]:
        console.print(f"autoencoder sensitivity search, {s['executor']}: {s['seconds']:.1f} s "
                      f"(psnr {s['psnr']:.2f})")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "executors.json").write_text(json.dumps({"workers": args.workers,
                                                        **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
