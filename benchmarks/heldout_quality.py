"""Held-out quality of the digits autoencoder and classifier per selection and recovery.

    python benchmarks/heldout_quality.py [--epochs 10]

Both models are trained in code on scikit-learn's digits (28x28); calibration uses 256
training images (of which the default 20% are held out by the run itself), quality is
measured with the written ONNX model on the 450 test images, which no run sees: PSNR for the
autoencoder (60% fewer parameters), accuracy for the classifier (50% fewer). For each
configuration: parameters kept, the test figure, the run's own figures per stage on its
calibration share and its held-out share, and the wall time. Sensitivity with compensation
measures its candidates after the refit (``search_refit`` auto); one row measures them as cut,
as before, for comparison.
Needs the dev extra (torch, scikit-learn).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from onnxprune.api import prune
from onnxprune.zoo.digits import digits28
from onnxprune.zoo.train import export, psnr, train_autoencoder, train_classifier

RESULTS = Path(__file__).parent / "results"
CONFIGS = {
    "uniform l2": {"strategy": "uniform", "criterion": "l2"},
    "uniform reconstruction": {"strategy": "uniform", "criterion": "reconstruction"},
    "soft (autograd) l2": {"strategy": "soft", "criterion": "l2"},
    "soft (finite differences) l2": {"strategy": "soft", "criterion": "l2",
                                     "soft_method": "finite"},
    "sensitivity l2": {"strategy": "sensitivity", "criterion": "l2"},
    "uniform reconstruction + compensate": {"strategy": "uniform",
                                            "criterion": "reconstruction", "compensate": True},
    "sensitivity l2 + compensate, cuts measured unrefit": {
        "strategy": "sensitivity", "criterion": "l2", "compensate": True, "search_refit": "off"},
    "sensitivity l2 + compensate": {"strategy": "sensitivity", "criterion": "l2",
                                    "compensate": True},
    "sensitivity reconstruction + compensate": {"strategy": "sensitivity",
                                                "criterion": "reconstruction",
                                                "compensate": True},
    "sensitivity l2 + compensate + distill": {"strategy": "sensitivity", "criterion": "l2",
                                              "compensate": True, "recover": "distill",
                                              "distill_steps": 1500},
}


def _run(model: Path, test, metric: str, target: float, out: Path) -> list[dict]:
    x_train, y_train = digits28("train")
    calib = {"input": x_train[:256], "labels": y_train[:256]}
    x, y = test

    def quality(path):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        o = sess.run(None, {"input": x})[0]
        return psnr(o, x) if metric == "psnr" else float(np.mean(o.argmax(-1) == y))

    rows = [{"config": "original", "test": quality(model)}]
    for name, kw in CONFIGS.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = prune(model, out, calib=calib, metric=metric, target_params=target, **kw)
        seconds = time.perf_counter() - start
        stages = r.stages["stages"]
        rows.append({"config": name, "params_kept": r.params_after / r.params_before,
                     "test": quality(out), "seconds": seconds,
                     "stages": [{k: v for k, v in s.items()} for s in stages]})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args(argv)
    console = Console()
    test = digits28("test")
    out = {"calibration": "256 training images (20% held out by the run)",
           "test": "450 test images"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ae = export(train_autoencoder(epochs=args.epochs).model, tmp / "ae.onnx", (1, 28, 28))
        cls = export(train_classifier(epochs=args.epochs).model, tmp / "cls.onnx", (1, 28, 28))
        out["autoencoder (psnr, 60% fewer params)"] = _run(ae, test, "psnr", 0.6, tmp / "o.onnx")
        out["classifier (accuracy, 50% fewer params)"] = _run(cls, test, "accuracy", 0.5,
                                                              tmp / "o.onnx")
    for title, rows in out.items():
        if not isinstance(rows, list):
            continue
        t = Table(title=title, title_justify="left")
        for col in ("config", "kept", "test", "run: calib -> held-out per stage", "s"):
            t.add_column(col, justify="left" if col.startswith(("config", "run")) else "right")
        for r in rows:
            st = "; ".join(f"{s['stage']} {s['calib']:.3g}/{s['heldout']:.3g}"
                           + (" (undone)" if s.get("kept") is False else "")
                           for s in r.get("stages", []))
            t.add_row(r["config"], f"{r['params_kept']:.3f}" if "params_kept" in r else "1",
                      f"{r['test']:.3f}", st, f"{r['seconds']:.1f}" if "seconds" in r else "")
        console.print(t)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "heldout_quality.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
