"""Pruning, then int8: quality, file size and CPU latency of original / pruned / pruned+int8.

    python benchmarks/quantize.py [--skip-resnet] [--repeat 20] [--batches 1,32]

Autoencoder: the zoo's autoencoder trained on scikit-learn's digits, pruned to 30% fewer
parameters (sensitivity strategy, PSNR, compensation) on 256 calibration images and quantized
to int8 in the same run (``quantize="int8"``: onnxruntime's static quantizer, QDQ, per-channel
weights, checked against the float model on the held-out fifth). Reported: PSNR of the
original, the pruned float and the pruned int8 model on the digits' test split (450 images
neither the search nor the calibration saw), and the file sizes.

ResNet-50 (built in code, random weights): 50% of every group's channels (uniform L2, as in
benchmarks/speedup.py), int8 calibrated on 32 random images. The other order too: the
original quantized first (the same quantizer, QDQ) and that int8 model pruned as it is. The
original, the pruned float model, the pruned int8 model, the int8 original and the pruned int8
original are measured alternately in one run (onnxruntime CPU, optimizations on, `onnxprune
bench`'s runner). Writes benchmarks/results/quantize.json.
Needs the dev extra (torch, scikit-learn).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from rich.console import Console

from onnxprune.api import prune
from onnxprune.bench.runner import run_bench
from onnxprune.ir.arrays import Calibration
from onnxprune.ir.io import save_model
from onnxprune.quant import quantize_int8
from onnxprune.search.quality import psnr
from onnxprune.zoo.catalog import export_model, write_digits

RESULTS = Path(__file__).parent / "results"


def _psnr(path: Path, images: np.ndarray) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": images})
    return psnr(out, {"input": images}, out)


def autoencoder(tmp: Path, console: Console) -> dict:
    original = export_model("autoencoder", tmp / "ae.onnx", train=True)
    calib, _ = write_digits(tmp / "d.npz", count=256)
    test, n_test = write_digits(tmp / "t.npz", split="test")
    r = prune(original, tmp / "ae_int8.onnx", calib=str(calib), target_params=0.3,
              strategy="sensitivity", metric="psnr", compensate=True, quantize="int8")
    pruned = save_model(r.float_model, tmp / "ae_pruned.onnx")
    images = np.load(test)["input"]
    files = {"original": original, "pruned": pruned, "pruned+int8": tmp / "ae_int8.onnx"}
    out = {"test_samples": n_test, "quantization": r.quantization,
           "params": {"original": r.params_before,
                      "pruned": r.quantization["params_by_type_float"],
                      "pruned+int8": r.params_by_type_after},
           "psnr_test": {k: _psnr(p, images) for k, p in files.items()},
           "file_bytes": {k: os.path.getsize(p) for k, p in files.items()}}
    b = out["file_bytes"]
    out["file_ratio"] = {"pruned": b["pruned"] / b["original"],
                         "pruned+int8": b["pruned+int8"] / b["original"]}
    p = out["psnr_test"]
    out["int8_minus_float_db"] = p["pruned+int8"] - p["pruned"]
    console.log(f"autoencoder: PSNR on {n_test} test images {p['original']:.2f} (original), "
                f"{p['pruned']:.2f} (pruned), {p['pruned+int8']:.2f} (pruned+int8); files "
                f"{b['original']:,} / {b['pruned']:,} / {b['pruned+int8']:,} bytes "
                f"({out['file_ratio']['pruned+int8']:.3f}x)")
    return out


def resnet50(tmp: Path, console: Console, ratio: float, batches: list[int], repeat: int) -> dict:
    original = export_model("resnet50", tmp / "r50.onnx")
    r = prune(original, tmp / "r50_int8.onnx", ratio=ratio, calib_random=32, quantize="int8")
    pruned = save_model(r.float_model, tmp / "r50_pruned.onnx")
    # the other order: a QDQ model of the original (the same quantizer), pruned as it is
    rng = np.random.default_rng(0)
    calib = Calibration({"input": rng.standard_normal((32, 3, 224, 224)).astype(np.float32)})
    qdq = save_model(quantize_int8(onnx.load(original), calib), tmp / "r50_qdq.onnx")
    q = prune(qdq, tmp / "r50_qdq_pruned.onnx", ratio=ratio)
    console.log(f"resnet50 int8 -> pruned: oracle max abs diff {q.verification.max_abs_diff:.3g}")
    models = [original, pruned, tmp / "r50_int8.onnx", qdq, tmp / "r50_qdq_pruned.onnx"]
    names = ["original", "pruned", "pruned+int8", "int8", "int8, then pruned"]
    rows, load = [], {"before": os.getloadavg()}  # a shared machine: other work shows here
    for batch in batches:
        report = run_bench(models, names=names, batches=[batch],
                           repeat=repeat if batch == 1 else max(3, repeat // 4), warmup=3)
        rows += report.to_json()["results"]
        env = report.to_json()["environment"]
        for row in report.to_json()["results"]:
            console.log(f"resnet50 b{batch} {row['model']}: p50 {row['p50']:.2f} ms, speedup "
                        f"{row['speedup']:.2f}x")
    load["after"] = os.getloadavg()
    return {"ratio": ratio, "quantization": r.quantization, "rows": rows, "environment": env,
            "load_average": load,
            "file_bytes": {k: os.path.getsize(p) for k, p in zip(names, models, strict=True)},
            "qdq_pruned_oracle_max_abs_diff": q.verification.max_abs_diff,
            "qdq_pruned_params_by_type": q.params_by_type_after}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-resnet", action="store_true")
    ap.add_argument("--skip-autoencoder", action="store_true")
    ap.add_argument("--ratio", type=float, default=0.5, help="ResNet-50's channel ratio")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    console = Console(width=160)
    result: dict = {"onnx": onnx.__version__, "onnxruntime": ort.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_autoencoder:
            result["autoencoder"] = {"args": vars(args), **autoencoder(Path(tmp), console)}
        if not args.skip_resnet:
            result["resnet50"] = {"args": vars(args), **resnet50(
                Path(tmp), console, args.ratio, [int(b) for b in args.batches.split(",")],
                args.repeat)}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "quantize.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **result}, indent=2, default=str) + "\n")
    console.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
