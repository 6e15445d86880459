"""Search time against a uniform prune, side by side, as the work grows: digits autoencoders
of three sizes, each with two calibration sizes.

    python benchmarks/search_time.py [--repeat 3] [--epochs 3]

The autoencoders of `onnxprune.zoo.train` (trained in code for a few epochs: the time of a
search does not depend on how good the weights are; half, the seed's and twice its widths and
bottleneck) are pruned to 60% fewer parameters with the PSNR metric on 128 and 512 calibration
images (the default 20% held out by each run), by a uniform prune and by each search strategy;
the configurations alternate within each round so machine noise hits them alike. Prints the
median wall time of `prune()` and its ratio to the uniform prune's of the same model and data;
writes benchmarks/results/search_time.json. Needs the dev extra (torch, scikit-learn).
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


SIZES = {"narrow": {"widths": (8, 16), "latent": 16}, "seed": {},
         "wide": {"widths": (32, 64), "latent": 64}}
CALIB = (128, 512)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    console = Console(width=110)
    x, _ = digits28("train")
    cases = [(size, n) for size in SIZES for n in CALIB]
    times = {f"{size} {n}": {name: [] for name in CONFIGS} for size, n in cases}
    params, reductions = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        models = {size: export(train_autoencoder(epochs=args.epochs, **kw).model,
                               Path(tmp) / f"ae-{size}.onnx", (1, 28, 28))
                  for size, kw in SIZES.items()}
        prune(models["seed"], calib={"input": x[:128]}, metric="psnr", target_params=0.6)  # imports
        for i in range(args.repeat):
            console.log(f"round {i + 1}/{args.repeat}")
            for size, n in cases:
                case = f"{size} {n}"
                for name, kw in CONFIGS.items():
                    start = time.perf_counter()
                    r = prune(models[size], calib={"input": x[:n]}, metric="psnr",
                              target_params=0.6, **kw)
                    times[case][name].append(time.perf_counter() - start)
                    reductions[f"{case} {name}"] = 1 - r.params_after / r.params_before
                    params[size] = r.params_before
    median = {case: {name: statistics.median(ts) for name, ts in row.items()}
              for case, row in times.items()}
    table = Table(title="autoencoders, 60% fewer parameters: seconds (x the uniform prune of the "
                        f"same model and data), median of {args.repeat}")
    table.add_column("model, calibration images")
    for name in CONFIGS:
        table.add_column(name, justify="right")
    for case, row in median.items():
        size = case.split()[0]
        table.add_row(f"{size} ({params[size]:,} params), {case.split()[1]}",
                      *[f"{row[n]:.2f} ({row[n] / row['uniform']:.1f}x)" for n in CONFIGS])
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "search_time.json"
    out.write_text(json.dumps({
        "machine": {"cpu": platform.machine(), "python": platform.python_version()},
        "repeat": args.repeat, "epochs": args.epochs, "params": params, "median_s": median,
        "over_uniform": {c: {n: s / row["uniform"] for n, s in row.items()}
                         for c, row in median.items()},
        "runs": times, "params_removed": reductions}, indent=2) + "\n")
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
