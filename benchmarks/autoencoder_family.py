"""Does the recipe carry to autoencoders it was not tuned on? Several digits autoencoders of the
seed paper's shape (other widths, bottlenecks and training lengths, one trained past 31 dB),
each pruned to 60% fewer parameters, judged on the 450 test images no run sees (issue 34).

    python benchmarks/autoencoder_family.py [--only NAME,...]

Configurations: uniform L2; soft coefficients (autograd) with channels ranked by L2, and as
by default (each of L2, activation and reconstruction ranks them, the metric on the
calibration data keeps the best); sensitivity + compensate (the
search measured after the refit), and the same cut (its plan file) with the refit fitted on every
training image; the full recipe, sensitivity + compensate + distill
(1500 steps), on 256, 512 and 1024 training images; and the full recipe on every training
image with 8000 distillation steps, its search measuring all of them or 256 (search_samples).
Calibration: the first 256 training images (512, 1024 and
all 1347 where named), of which each run holds out 20%. Goals: the
full recipe >= unpruned - 4 dB and soft >= uniform + 3 dB on every model.
Results: benchmarks/results/autoencoder_family.json and a Markdown table. Needs the dev extra.
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

from onnxprune.api import prune
from onnxprune.zoo.digits import digits28
from onnxprune.zoo.train import export, psnr, train_autoencoder

RESULTS = Path(__file__).parent / "results" / "autoencoder_family.json"
TARGET = 0.6
# name: (training keywords, what differs from the project's own autoencoder)
MODELS = {
    "seed 10 epochs": ({"epochs": 10}, "the project's own (heldout_quality.py)"),
    "seed 60 epochs": ({"epochs": 60, "seed": 1}, "the same shape trained 6x longer"),
    "wide": ({"epochs": 30, "widths": (32, 64), "latent": 64, "seed": 2},
             "twice the channels and bottleneck"),
    "narrow": ({"epochs": 30, "widths": (8, 16), "latent": 16, "seed": 3},
               "half the channels and bottleneck"),
    "wide bottleneck 100 epochs": ({"epochs": 100, "widths": (16, 32), "latent": 96, "seed": 4},
                                   "a 96-unit bottleneck, trained long"),
}
CONFIGS = {
    "uniform l2": {"strategy": "uniform", "criterion": "l2"},
    "soft, l2 ranking": {"strategy": "soft", "criterion": "l2"},
    # the default: each of l2, activation and reconstruction ranks, the metric keeps the best
    "soft (autograd)": {"strategy": "soft"},
    "sensitivity + compensate": {"strategy": "sensitivity", "compensate": True,
                                 "save_plan": "cut"},
    # the same cut (its plan file), its refit fitted on every training image: what the 256
    # images cost is the search's or the refit's
    "the same cut, refit on all images": {"plan": "cut", "compensate": True,
                                          "calibration": "all"},
    "full recipe": {"strategy": "sensitivity", "compensate": True, "recover": "distill",
                    "distill_steps": 1500},
    # how the recipe grows with its data: the first 512 and 1024 training images
    "full recipe, 512 images": {"strategy": "sensitivity", "compensate": True,
                                "recover": "distill", "distill_steps": 1500,
                                "calibration": "512"},
    "full recipe, 1024 images": {"strategy": "sensitivity", "compensate": True,
                                 "recover": "distill", "distill_steps": 1500,
                                 "calibration": "1024"},
    # the same on every training image (1347) with a longer distillation: how far data goes
    "full recipe, whole training set": {"strategy": "sensitivity", "compensate": True,
                                        "recover": "distill", "distill_steps": 8000,
                                        "calibration": "all"},
    # the same with the search measuring 256 of those images (search_samples), compensation and
    # distillation fitting them all
    "full recipe, whole training set, search on 256": {
        "strategy": "sensitivity", "compensate": True, "recover": "distill",
        "distill_steps": 8000, "calibration": "all", "search_samples": 256},
}


def run_model(name: str, train_kw: dict, tmp: Path) -> dict:
    x_train, y_train = digits28("train")
    x_test, _ = digits28("test")
    calibs = {"256": {"input": x_train[:256]}, "512": {"input": x_train[:512]},
              "1024": {"input": x_train[:1024]}, "all": {"input": x_train}}
    start = time.perf_counter()
    trained = train_autoencoder(**train_kw)
    path = export(trained.model, tmp / f"{name}.onnx", (1, 28, 28))
    row = {"model": name, "training": {k: list(v) if isinstance(v, tuple) else v
                                       for k, v in train_kw.items()},
           "train_seconds": round(time.perf_counter() - start, 1)}

    def test_psnr(p: Path) -> float:
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        return psnr(sess.run(None, {"input": x_test})[0], x_test)

    row["unpruned"] = test_psnr(path)
    row["configs"] = {}
    out = tmp / f"{name}.pruned.onnx"
    for config, kw in CONFIGS.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kw = dict(kw)
            calib = calibs[kw.pop("calibration", "256")]
            for key in ("plan", "save_plan"):  # a plan file of this model's
                if key in kw:
                    kw[key] = tmp / f"{name}.{kw[key]}.json"
            target = {} if "plan" in kw else {"target_params": TARGET}  # (a plan is the cut)
            r = prune(path, out, calib=calib, metric="psnr", **target, **kw)
        row["configs"][config] = {"test": test_psnr(out),
                                  "params_kept": r.params_after / r.params_before,
                                  "seconds": round(time.perf_counter() - start, 2),
                                  "search_seconds": round(r.timings.get("select", 0.0), 2),
                                  "stages": (r.stages or {}).get("stages")}
        if "distill" in (r.recovery or {}):
            d = r.recovery["distill"]
            row["configs"][config]["distill"] = {k: d.get(k) for k in (
                "steps", "best_step", "stopped", "tries", "lr", "kept", "val_before",
                "val_after")}
        print(f"[{name}] {config}: {row['configs'][config]}", flush=True)
    c = row["configs"]
    row["goals"] = {"recipe >= unpruned - 4 dB": c["full recipe"]["test"] >= row["unpruned"] - 4,
                    "recipe on 512 images >= unpruned - 4 dB":
                    c["full recipe, 512 images"]["test"] >= row["unpruned"] - 4,
                    "recipe on 1024 images >= unpruned - 4 dB":
                    c["full recipe, 1024 images"]["test"] >= row["unpruned"] - 4,
                    "recipe on the whole training set >= unpruned - 4 dB":
                    c["full recipe, whole training set"]["test"] >= row["unpruned"] - 4,
                    "soft >= uniform + 3 dB": c["soft (autograd)"]["test"]
                    >= c["uniform l2"]["test"] + 3}
    return row


def table(rows: dict) -> list[str]:
    head = "| model | unpruned dB | " + " | ".join(CONFIGS) + " | goals met |"
    lines = [head, "|" + "---|" * (3 + len(CONFIGS))]
    for name, r in rows.items():
        cells = " | ".join(f"{r['configs'][c]['test']:.2f}" for c in CONFIGS)
        met = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in r["goals"].items())
        lines.append(f"| {name} ({MODELS[name][1]}) | {r['unpruned']:.2f} | {cells} | {met} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="comma-separated model names")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(MODELS)
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": {}}
    rows = dict(old.get("rows", {}))
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows[name] = run_model(name, MODELS[name][0], Path(tmp))
    rows = {k: rows[k] for k in MODELS if k in rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"target_params": TARGET, "calibration": "the first 256 "
                                   "training images (512, 1024 or all 1347 where named)",
                                   "test": "450 test images", "rows": rows}, indent=1) + "\n")
    print("\n".join(table(rows)))
    return 0 if all(all(r["goals"].values()) for r in rows.values()) else 1


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
