"""Analysis + prune time on a ResNet-50-sized graph, side by side with Torch-Pruning.

    python benchmarks/prune_time.py [--model resnet50] [--ratio 0.5] [--repeat 3]
        [--variant sequential]

Both prune 50% of the channels of every group (L2 magnitude) on the same network in the same
run. onnxprune works on the exported ONNX graph (load + normalize + analyze, then score +
select + remove); Torch-Pruning on the torch module (DependencyGraph build, then prune).
Verification (checker + onnxruntime + mask oracle) is reported separately: Torch-Pruning has none.
``--variant sequential``: the same layers flattened into one ``nn.Sequential`` (stem, blocks,
pooling, ``nn.Flatten``, head), every BatchNorm with trained-looking statistics and affine
parameters instead of the defaults: another export of the same network. ``--variant
torchvision`` / ``timm``: the network as those libraries build it (``torchvision.models``,
``timm.create_model``; random weights, the same BatchNorm statistics), in a venv that has them
(torchvision does not load beside the CPU torch 2.13.0 the bench extra pins: a venv with
torch 2.14.1, torchvision 0.29.1, timm and torch-pruning 1.6.1, onnxprune installed without
extras).
Needs the `bench` extra (torch, torch-pruning).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch_pruning as tp
from rich.console import Console
from rich.table import Table

from onnxprune.analysis.size import graph_macs, graph_params
from onnxprune.api import prune
from onnxprune.pipeline import (
    AnalyzeChannels,
    Cleanup,
    Context,
    LoadModel,
    Normalize,
    Pipeline,
    RemoveChannels,
    ScoreChannels,
    SelectChannels,
    Verify,
)
from onnxprune.zoo.torch_zoo import ZOO, build, export_onnx

RESULTS = Path(__file__).parent / "results"


def time_onnxprune(path: str, ratio: float) -> dict:
    ctx = Context()
    t0 = time.perf_counter()
    LoadModel(path)(ctx)
    tl = time.perf_counter()
    Pipeline([Normalize(check=False), AnalyzeChannels()])(ctx)
    t1 = time.perf_counter()
    params0, macs0 = graph_params(ctx.graph), graph_macs(ctx.graph)
    Pipeline([ScoreChannels("l2"), SelectChannels("uniform", ratio), RemoveChannels(),
              Cleanup()])(ctx)
    t2 = time.perf_counter()
    Verify(compare_input=False)(ctx)
    t3 = time.perf_counter()
    full = prune(path, ratio=ratio)  # what `onnxprune prune` does: every check included
    t4 = time.perf_counter()
    assert full.verification.passed
    return {
        "load_s": tl - t0, "analyze_s": t1 - tl, "prune_s": t2 - t1, "total_s": t2 - t0,
        "verify_s": t3 - t2, "prune_verify_s": t4 - t3,
        "groups": len(ctx.analysis.groups),
        "macs_ratio": macs0 / graph_macs(ctx.graph), "params_ratio": params0 / graph_params(ctx.graph),
        "oracle_max_rel_diff": ctx.verification.max_rel_diff,
    }


def time_torch_pruning(model: torch.nn.Module, shape, ratio: float) -> dict:
    model = copy.deepcopy(model)
    example = torch.randn(1, *shape)
    macs0, params0 = tp.utils.count_ops_and_params(model, example)
    ignored = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1:]
    t0 = time.perf_counter()
    pruner = tp.pruner.MagnitudePruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio, ignored_layers=ignored,
    )
    t1 = time.perf_counter()
    pruner.step()
    t2 = time.perf_counter()
    macs1, params1 = tp.utils.count_ops_and_params(model, example)
    return {
        "load_s": 0.0, "analyze_s": t1 - t0, "prune_s": t2 - t1, "total_s": t2 - t0,
        "groups": len(list(pruner.DG.get_all_groups(root_module_types=pruner.root_module_types))),
        "macs_ratio": macs0 / macs1, "params_ratio": params0 / params1,
    }


def sequential(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``module``'s children in one flat ``nn.Sequential`` (a container child's children in
    its place, ``nn.Flatten`` before the head), BatchNorms given non-default statistics."""
    parts = []
    for name, child in module.named_children():
        if isinstance(child, (torch.nn.Sequential, torch.nn.ModuleList)):
            parts.extend(child.children())
        else:
            if name == "fc":
                parts.append(torch.nn.Flatten(1))
            parts.append(child)
    return trained_norms(torch.nn.Sequential(*parts), seed)


def trained_norms(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``module`` (in eval mode) with its BatchNorms given non-default statistics and affine
    parameters, as training leaves them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.data.copy_(0.2 * (torch.rand(n, generator=g) - 0.5))
    return module.eval()


def library_model(variant: str, name: str) -> torch.nn.Module:
    """The network as torchvision or timm builds it (random weights, trained-looking norms):
    another export of the same network, written independently of the project's zoo."""
    if variant == "torchvision":
        import torchvision

        return trained_norms(getattr(torchvision.models, name)(weights=None))
    import timm

    return trained_norms(timm.create_model(name, pretrained=False))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50", choices=sorted(ZOO))
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--variant", choices=("zoo", "sequential", "torchvision", "timm"),
                    default="zoo")
    args = ap.parse_args()
    console = Console(width=120)
    torch.set_num_threads(2)
    if args.variant in ("torchvision", "timm"):
        module = library_model(args.variant, args.model)
    else:
        module = build(args.model)
    if args.variant == "sequential":
        module = sequential(module)
    shape = ZOO[args.model][1]
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(module, Path(tmp) / f"{args.model}.onnx", shape)
        runs = {"onnxprune": [], "torch-pruning": []}
        for i in range(args.repeat):  # alternate so machine noise hits both
            console.log(f"round {i + 1}/{args.repeat}")
            runs["onnxprune"].append(time_onnxprune(path, args.ratio))
            runs["torch-pruning"].append(time_torch_pruning(module, shape, args.ratio))
    summary = {
        tool: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for tool, rs in runs.items()
    }
    speedup = summary["torch-pruning"]["total_s"] / summary["onnxprune"]["total_s"]
    table = Table(title=f"{args.model}: analysis + prune at ratio {args.ratio} (median of {args.repeat})")
    for col in ("tool", "load s", "analyze s", "prune s", "total s", "groups", "MACs ÷",
                "params ÷"):
        table.add_column(col, justify="right")
    for tool, s in summary.items():
        table.add_row(tool, f"{s['load_s']:.3f}", f"{s['analyze_s']:.3f}", f"{s['prune_s']:.3f}", f"{s['total_s']:.3f}",
                      str(int(s["groups"])), f"{s['macs_ratio']:.2f}", f"{s['params_ratio']:.2f}")
    console.print(table)
    analysis = (summary["torch-pruning"]["analyze_s"] + summary["torch-pruning"]["prune_s"]) / (
        summary["onnxprune"]["analyze_s"] + summary["onnxprune"]["prune_s"])
    tp_total = summary["torch-pruning"]["total_s"]
    full = summary["onnxprune"]["prune_verify_s"]
    console.print(
        f"time ratio Torch-Pruning / onnxprune: {speedup:.2f} including loading the .onnx file, "
        f"{analysis:.2f} for analysis + prune alone; verification adds "
        f"{summary['onnxprune']['verify_s']:.2f} s")
    console.print(
        f"onnxprune prune() end to end (load, normalize with its check, analyze, prune, verify "
        f"against the oracle at the chosen shapes; the input model compared unless "
        f"normalization gave it back node for node): {full:.2f} s = "
        f"{full / tp_total:.2f} x Torch-Pruning's graph build + prune ({tp_total:.2f} s)")
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if args.variant == "zoo" else f"_{args.variant}"
    out = RESULTS / f"prune_time_{args.model}{suffix}.json"
    out.write_text(json.dumps({
        "model": args.model, "variant": args.variant, "ratio": args.ratio,
        "repeat": args.repeat,
        "machine": {"cpu": platform.processor() or platform.machine(), "python": sys.version.split()[0],
                    "torch": torch.__version__, "torch_pruning": tp.__version__},
        "median": summary, "speedup_vs_torch_pruning": speedup,
        "speedup_vs_torch_pruning_without_load": analysis,
        "prune_verify_over_torch_pruning": full / tp_total, "runs": runs,
    }, indent=2))
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
