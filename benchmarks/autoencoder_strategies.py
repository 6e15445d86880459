"""PSNR vs parameter reduction on an MNIST-style autoencoder, per strategy, next to
Torch-Pruning in the same run.

    python benchmarks/autoencoder_strategies.py [--targets 0.3,0.5,0.6,0.7] [--epochs 30]

The autoencoder of onnxprune.zoo (conv encoder -> Linear latent -> Linear -> Unflatten ->
ConvTranspose decoder) is trained on the digits set upsampled to 28x28; calibration uses 256
training images, PSNR is measured on the held-out test images with the pruned ONNX model.
Strategies: uniform L2, global L2, sensitivity (PSNR curves), soft coefficients (gradient and
grid), and the constraint mode (sensitivity and soft with their default criterion: reconstruction
for sensitivity; for soft the best of l2, activation and reconstruction by the metric); Torch-Pruning's MagnitudePruner (L2, the same network) is
matched to each parameter target by bisection on its ratio.
Needs the dev extra (torch, scikit-learn) and the bench extra (torch-pruning).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from onnxprune.api import prune
from onnxprune.zoo.digits import digits28
from onnxprune.zoo.train import export, psnr, train_autoencoder

RESULTS = Path(__file__).parent / "results"
METHODS = {
    # L2 as named (with calibration data the default criterion is reconstruction)
    "uniform L2": {"strategy": "uniform", "criterion": "l2"},
    "global L2": {"strategy": "global", "criterion": "l2"},
    "sensitivity": {"strategy": "sensitivity"},
    "soft (gradient)": {"strategy": "soft", "soft_method": "gradient"},
    "soft (grid)": {"strategy": "soft", "soft_method": "grid"},
}


def onnx_psnr(model, x: np.ndarray) -> float:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return psnr(sess.run(None, {"input": x})[0], x)


def torch_pruning(module, x_test: np.ndarray, target: float) -> dict:
    """Torch-Pruning's MagnitudePruner, its uniform ratio bisected to remove ``target`` of the
    parameters; the pruned torch model is evaluated on the test images."""
    import torch_pruning as tp

    example = torch.from_numpy(x_test[:1])
    total = sum(p.numel() for p in module.parameters())
    last = [m for m in module.modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1]

    def attempt(ratio):
        m = copy.deepcopy(module)
        pruner = tp.pruner.MagnitudePruner(m, example, tp.importance.MagnitudeImportance(p=2),
                                           pruning_ratio=ratio, ignored_layers=[last])
        pruner.step()
        return m, 1 - sum(p.numel() for p in m.parameters()) / total

    lo, hi, best = 0.0, 0.95, None
    try:
        for _ in range(14):
            mid = (lo + hi) / 2
            m, red = attempt(mid)
            if red >= target:
                hi, best = mid, (m, red)
            else:
                lo = mid
        if best is None:
            m, red = attempt(hi)
            best = (m, red)
        m, red = best
        with torch.no_grad():
            out = m(torch.from_numpy(x_test)).numpy()
        return {"params_reduction": red, "psnr": psnr(out, x_test), "ratio": hi}
    except Exception as err:  # noqa: BLE001 - report how the peer fails
        return {"params_reduction": None, "psnr": None,
                "error": f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="0.3,0.5,0.6,0.7")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--constraints", default="25,28,30")
    args = ap.parse_args()
    console = Console(width=150)
    targets = [float(t) for t in args.targets.split(",")]
    x_train, _ = digits28("train")
    x_test, _ = digits28("test")
    calib = {"input": x_train[: args.calib]}
    t0 = time.time()
    trained = train_autoencoder(args.epochs)
    console.log(f"trained in {time.time() - t0:.0f} s: test PSNR {trained.score:.2f} dB")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = export(trained.model, Path(tmp) / "ae.onnx", (1, 28, 28))
        base = onnx_psnr(__import__("onnx").load(path), x_test)
        for target in targets:
            for name, kw in METHODS.items():
                t1 = time.time()
                r = prune(path, target_params=target, calib=calib, metric="psnr", **kw)
                rows.append({"method": name, "target": target,
                             "params_reduction": 1 - r.params_after / r.params_before,
                             "psnr": onnx_psnr(r.model, x_test), "seconds": time.time() - t1,
                             "widths": {str(k): v for k, v in r.plan.widths.items()}})
                console.log(rows[-1])
            tp_row = torch_pruning(trained.model, x_test, target)
            rows.append({"method": "Torch-Pruning L2", "target": target, **tp_row})
            console.log(rows[-1])
        constrained = []
        for bound in [float(b) for b in args.constraints.split(",")]:
            r = prune(path, strategy="sensitivity", constraint=f"psnr>={bound}", calib=calib,
                      metric="psnr")
            constrained.append({"bound": bound, "calib_psnr": r.quality["after"],
                                "test_psnr": onnx_psnr(r.model, x_test),
                                "params_reduction": 1 - r.params_after / r.params_before})
            console.log(constrained[-1])
    table = Table(title=f"autoencoder: held-out PSNR (dB) at each parameter reduction; "
                        f"unpruned {base:.2f} dB")
    names = [*METHODS, "Torch-Pruning L2"]
    for col in ("params removed", *names):
        table.add_column(col, justify="right")
    for target in targets:
        cells = []
        for name in names:
            row = next(r for r in rows if r["method"] == name and r["target"] == target)
            if row.get("psnr") is None:
                cells.append("breaks")
            else:
                cells.append(f"{row['psnr']:.2f} ({row['params_reduction']:.0%})")
        table.add_row(f"{target:.0%}", *cells)
    console.print(table)
    for c in constrained:
        console.print(f"constraint psnr>={c['bound']:.0f} on calibration: {c['params_reduction']:.1%} "
                      f"fewer params, held-out PSNR {c['test_psnr']:.2f} dB")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "autoencoder_strategies.json"
    out.write_text(json.dumps({"args": vars(args), "unpruned_psnr": base, "rows": rows,
                               "constraint": constrained}, indent=2))
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
