"""Recovery after pruning, without a training pipeline: none / compensate / distill.

    python benchmarks/recovery.py [--targets 0.5,0.6,0.7] [--distill-steps 1000]

Two models trained in code on the digits set (28x28): the MNIST-style autoencoder (quality:
held-out PSNR) and a small CNN classifier (quality: held-out accuracy). Each is pruned to the
parameter targets with the sensitivity strategy on 512 calibration images, then recovered by
nothing, by compensation (least squares, bias compensation), by distillation from the original
(torch interpreter of the ONNX graph, early stopping on a held-out fifth of the calibration
data), or by both. The wall time each recovery adds is reported.
Needs the dev extra (torch, scikit-learn).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from onnxprune.api import prune
from onnxprune.zoo.digits import digits28
from onnxprune.zoo.train import export, psnr, train_autoencoder, train_classifier

RESULTS = Path(__file__).parent / "results"
RECOVERY = {
    "none": {},
    "compensate": {"compensate": True},
    "distill": {"recover": "distill"},
    "compensate + distill": {"compensate": True, "recover": "distill"},
}


def _run(model, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="0.5,0.6,0.7")
    ap.add_argument("--distill-steps", type=int, default=1000)
    ap.add_argument("--distill-lr", type=float, default=1e-2)
    ap.add_argument("--calib", type=int, default=512)
    args = ap.parse_args()
    console = Console(width=150)
    targets = [float(t) for t in args.targets.split(",")]
    x_train, y_train = digits28("train")
    x_test, y_test = digits28("test")
    tasks = {
        "autoencoder": (train_autoencoder(30), "psnr", {"input": x_train[: args.calib]},
                        lambda out: psnr(out, x_test)),
        "classifier": (train_classifier(20), "accuracy",
                       {"input": x_train[: args.calib], "labels": y_train[: args.calib]},
                       lambda out: float(np.mean(out.argmax(1) == y_test))),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task, (trained, metric, calib, quality) in tasks.items():
            path = export(trained.model, Path(tmp) / f"{task}.onnx", (1, 28, 28))
            import onnx

            base = quality(_run(onnx.load(path), x_test))
            console.log(f"{task}: unpruned {metric} {base:.4g}")
            for target in targets:
                for name, kw in RECOVERY.items():
                    t0 = time.time()
                    r = prune(path, strategy="sensitivity", target_params=target, calib=calib,
                              metric=metric, distill_steps=args.distill_steps,
                              distill_lr=args.distill_lr, **kw)
                    recover_s = sum(v for k, v in r.timings.items()
                                    if k in ("compensate", "distill"))
                    rows.append({"task": task, "target": target, "recovery": name,
                                 "params_reduction": 1 - r.params_after / r.params_before,
                                 "quality": quality(_run(r.model, x_test)), "unpruned": base,
                                 "recovery_seconds": recover_s, "total_seconds": time.time() - t0})
                    console.log(rows[-1])
    for task, (_, metric, _, _) in tasks.items():
        table = Table(title=f"{task}: held-out {metric} (recovery wall time)")
        for col in ("params removed", *RECOVERY):
            table.add_column(col, justify="right")
        for target in targets:
            cells = []
            for name in RECOVERY:
                row = next(r for r in rows if r["task"] == task and r["target"] == target
                           and r["recovery"] == name)
                q = f"{row['quality']:.2f}" if metric == "psnr" else f"{row['quality']:.1%}"
                cells.append(f"{q} ({row['recovery_seconds']:.1f} s)")
            table.add_row(f"{target:.0%}", *cells)
        console.print(table)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "recovery.json"
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
