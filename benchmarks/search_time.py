"""Search time against a uniform prune, side by side: the digits autoencoder, 256 images.

    python benchmarks/search_time.py [--repeat 3] [--epochs 3]

The autoencoder of `onnxprune.zoo.train` (trained in code for a few epochs: the time of a
search does not depend on how good the weights are) is pruned to 60% fewer parameters with the
PSNR metric on 256 calibration images (the default 20% held out by each run), by a uniform
prune and by each search strategy; the configurations alternate within each round so machine
noise hits them alike. Prints the median wall time of `prune()` and its ratio to the uniform
prune's; writes benchmarks/results/search_time.json. Needs the dev extra (torch, scikit-learn).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onnxprune.api import prune
from onnxprune.zoo.digits import digits28
from onnxprune.zoo.train import export, train_autoencoder

RESULTS = Path(__file__).parent / "results"
CONFIGS = {
    "uniform": {"strategy": "uniform"},
    "sensitivity": {"strategy": "sensitivity"},
    "soft (autograd)": {"strategy": "soft"},
    "soft (finite differences)": {"strategy": "soft", "soft_method": "finite"},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    console = Console(width=110)
    x, _ = digits28("train")
    calib = {"input": x[:256]}
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    reductions: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = export(train_autoencoder(epochs=args.epochs).model, Path(tmp) / "ae.onnx",
                       (1, 28, 28))
        prune(model, calib=calib, metric="psnr", target_params=0.6)  # warm the imports
        for i in range(args.repeat):
            console.log(f"round {i + 1}/{args.repeat}")
            for name, kw in CONFIGS.items():
                start = time.perf_counter()
                r = prune(model, calib=calib, metric="psnr", target_params=0.6, **kw)
                times[name].append(time.perf_counter() - start)
                reductions[name] = 1 - r.params_after / r.params_before
    median = {name: statistics.median(ts) for name, ts in times.items()}
    base = median["uniform"]
    table = Table(title="autoencoder, 60% fewer parameters, 256 calibration images "
                        f"(median of {args.repeat})")
    for col in ("strategy", "params removed", "seconds", "x uniform"):
        table.add_column(col, justify="right")
    for name, s in median.items():
        table.add_row(name, f"{reductions[name]:.1%}", f"{s:.2f}", f"{s / base:.2f}")
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "search_time.json"
    out.write_text(json.dumps({
        "machine": {"cpu": platform.machine(), "python": platform.python_version()},
        "repeat": args.repeat, "epochs": args.epochs, "median_s": median,
        "over_uniform": {n: s / base for n, s in median.items()}, "runs": times,
        "params_removed": reductions}, indent=2) + "\n")
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
