"""Choosing where to cut by latency, on models with a task (issue 31): the digits autoencoder
(test PSNR) and classifier (test accuracy), trained in code; the sensitivity search against
``--target latency=F`` (its latency model) beside the same search against ``--target macs``,
the MAC fraction bisected by measurement to the latency the first reached; both judged on the
450 test images no run sees, at the batch the latency is measured at.

    python benchmarks/latency_task.py [--target 0.7] [--batch 256]

Results: benchmarks/results/latency_task.json. Needs the dev extra.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

from onnxprune.api import prune
from onnxprune.ir.runtime import session
from onnxprune.latency.measure import timed
from onnxprune.zoo.digits import digits28
from onnxprune.zoo.train import export, psnr, train_autoencoder, train_classifier

RESULTS = Path(__file__).parent / "results" / "latency_task.json"


def _ratio(original, pruned, feeds, seconds: float = 1.0) -> float:
    kw = {"quiet": True, "optimized": True, "spinning": False}
    o, p = timed([session(original, **kw), session(pruned, **kw)], [feeds, feeds], seconds)
    return p["ms"] / o["ms"]


def run(name: str, path: Path, metric: str, score, calib: dict, target: float, batch: int
        ) -> dict:
    bench = {"input": calib["input"][:batch]}
    common = {"calib": calib, "metric": metric, "strategy": "sensitivity", "holdout": 0.2}
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lat = prune(path, target=f"latency={target}", latency_batch=batch,
                    latency_cache="off", **common)
    seconds = time.perf_counter() - t
    achieved = lat.selection["latency"]["achieved"]
    base = onnx.load(str(path))
    lo, hi, best = 0.0, 0.95, None
    for _ in range(6):  # a MAC target whose measured latency is the closest to the one reached
        mid = (lo + hi) / 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = prune(path, target=f"macs={mid:.4f}", round_to=8, **common)
        got = _ratio(base, r.model, bench)
        if best is None or abs(got - achieved) < abs(best[1] - achieved):
            best = (r, got, mid)
        lo, hi = (mid, hi) if got > achieved else (lo, mid)
        if abs(got - achieved) <= 0.03 * achieved:
            break
    macs_cut, macs_ratio, macs_frac = best
    out = {"model": name, "batch": batch, "target": target, "achieved": achieved,
           "seconds": round(seconds, 1), "params_removed_latency": 1 - lat.params_after /
           lat.params_before, "macs_removed_latency": 1 - lat.macs_after / lat.macs_before,
           "test_latency": score(lat.model), "macs_target": round(macs_frac, 4),
           "macs_ratio": macs_ratio, "params_removed_macs": 1 - macs_cut.params_after /
           macs_cut.params_before, "test_macs": score(macs_cut.model),
           "unpruned": score(base)}
    print(json.dumps(out), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=float, default=0.7)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    x_train, y_train = digits28("train")
    x_test, y_test = digits28("test")
    calib = {"input": x_train[:256], "labels": y_train[:256]}

    def ae_score(model) -> float:
        return psnr(session(model).run(None, {"input": x_test})[0], x_test)

    def cls_score(model) -> float:
        return float(np.mean(session(model).run(None, {"input": x_test})[0].argmax(-1)
                             == y_test))

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ae = export(train_autoencoder(epochs=10).model, tmp / "ae.onnx", (1, 28, 28))
        cls = export(train_classifier(epochs=10).model, tmp / "cls.onnx", (1, 28, 28))
        rows.append(run("autoencoder (test PSNR)", ae, "psnr", ae_score, calib, args.target,
                        args.batch))
        rows.append(run("classifier (test accuracy)", cls, "accuracy", cls_score, calib,
                        args.target, args.batch))
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
