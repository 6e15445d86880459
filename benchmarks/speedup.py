"""Latency speedup vs MAC reduction on onnxruntime's CPU, side by side in one run.

    python benchmarks/speedup.py [--models resnet50,mobilenetv2,densenet121] [--batches 1,32]

For ResNet-50, MobileNetV2 and DenseNet-121 (built in code, random weights, BatchNorm folded)
at 50% channel pruning: the original, onnxprune's pruned model (uniform L2, --round-to 1 and
--round-to auto) and Torch-Pruning's pruned model exported to ONNX (MagnitudePruner, the same
ratio, classifier ignored) are measured alternately with `onnxprune bench`'s runner. Efficiency
is speedup / MAC reduction. Needs the bench extra (torch, torch-pruning).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch_pruning as tp
from rich.console import Console
from rich.table import Table

from onnxprune.api import prune
from onnxprune.bench.runner import run_bench
from onnxprune.ir.io import save_model
from onnxprune.zoo.torch_zoo import ZOO, build, export_onnx

RESULTS = Path(__file__).parent / "results"


def torch_pruning_model(name: str, ratio: float, path: Path) -> Path:
    model = copy.deepcopy(build(name))
    example = torch.randn(1, *ZOO[name][1])
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    pruner = tp.pruner.MagnitudePruner(model, example, tp.importance.MagnitudeImportance(p=2),
                                       pruning_ratio=ratio, ignored_layers=[last])
    pruner.step()
    return Path(export_onnx(model.eval(), path, ZOO[name][1], dynamic_batch=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,mobilenetv2,densenet121")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    console = Console(width=160)
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.models.split(","):
            original = Path(export_onnx(build(name), tmp / f"{name}.onnx", ZOO[name][1],
                                        dynamic_batch=True))
            variants = {"original": original}
            for label, rt in (("onnxprune", 1), ("onnxprune auto", "auto")):
                r = prune(original, ratio=args.ratio, round_to=rt)
                variants[label] = save_model(r.model, tmp / f"{name}_{rt}.onnx")
                console.log(f"{name} {label}: round_to {r.selection.get('round_to', rt)}")
            variants["Torch-Pruning"] = torch_pruning_model(name, args.ratio, tmp / f"{name}_tp.onnx")
            for batch in batches:
                repeat = args.repeat if batch == 1 else max(3, args.repeat // 4)
                report = run_bench(list(variants.values()), batches=[batch], repeat=repeat,
                                   warmup=3)
                for label, row in zip(variants, report.to_json()["results"], strict=True):
                    rows.append({**row, "file": row["model"], "model": name, "variant": label,
                                 "batch": batch})
                    console.log(f"{name} b{batch} {label}: p50 {row['p50']:.2f} ms, speedup "
                                f"{row['speedup']:.2f}, MACs / {row['mac_reduction']:.2f}, "
                                f"efficiency {row['efficiency']:.2f}")
    table = Table(title=f"{args.ratio:.0%} channel pruning on onnxruntime CPU: speedup (efficiency)")
    for col in ("model", "variant", "MACs ÷", *[f"batch {b}" for b in batches]):
        table.add_column(col, justify="right")
    for name in args.models.split(","):
        for label in ("onnxprune", "onnxprune auto", "Torch-Pruning"):
            cells = []
            mac = None
            for batch in batches:
                row = next(r for r in rows if r["model"] == name and r["variant"] == label
                           and r["batch"] == batch)
                mac = row["mac_reduction"]
                cells.append(f"{row['speedup']:.2f}x ({row['efficiency']:.2f})")
            table.add_row(name, label, f"{mac:.2f}", *cells)
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "speedup.json").write_text(json.dumps({"args": vars(args), "rows": rows},
                                                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
