"""Distillation throughput: samples per second through a training step (forward, backward,
Adam), this source tree against another one given with --baseline (an earlier onnxprune), side
by side in one run (issue 34: >= 10x on PP-OCR rec and MiniLM).

    git worktree add /tmp/onnxprune-base <commit>
    HF_HUB_OFFLINE=1 python benchmarks/distill_throughput.py --baseline /tmp/onnxprune-base

Each model's student is its plain 30% cut (uniform, no data; not compensated, so that no
version declines to train it), its teacher the original, the data the recipe's
(benchmarks/recipe_time.py). A child process per (tree, run) imports onnxprune from that tree
and times ``distill`` twice (after a one-step run that pays for imports and warm-up), with ``--steps`` and with ``--steps + --more`` steps, validation
and early stopping off: the difference over ``--more`` steps is one step's time, without the
set-up (the teacher's targets, the bridge). The runs of the two trees alternate (``--repeats``
rounds; the median is reported). The first batch's loss before training (the same data,
student and teacher) is printed for both trees: equal losses, faster steps. A third run,
"recipe", times this tree on the data as the recipe's calibrate pass leaves it: where every
sample's attention mask zeroes trailing positions (MiniLM's sentences padded to 32 tokens) they
are trimmed (``pipeline/support/padding.py``, proven on the original's outputs), so the same
samples cost less; its first-batch loss is printed beside the others. Where the CPU has
bfloat16 arithmetic (AVX512-BF16, AMX), "bf16" and "recipe_bf16" time this tree with
``--set distill.precision=bf16`` (torch's autocast) on the same data (``--no-bf16``: not).
Beside them, the ceiling: a step's arithmetic (3 x 2 x its weighted layers' MACs at the batch's
shapes: forward, and backward's two products) over the float32 matrix-multiply throughput
torch reaches on this machine (a 1024-square product, every core): no implementation steps
faster, so no speedup over the baseline exceeds ``speedup_at_most`` (in bfloat16, whose products
torch computes faster: ``speedup_at_most_bf16``).
Results: benchmarks/results/distill_throughput.json. Needs the real extra (MiniLM, rapidocr).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "real"))
sys.path.insert(0, str(ROOT / "benchmarks"))

RESULTS = ROOT / "benchmarks" / "results" / "distill_throughput.json"

CHILD = r"""
import json, sys, time
import numpy as np
from onnxprune.recover import distill as module
from onnxprune.recover.distill import distill
# the batch asked for, whatever a step's default memory share would take (the throughput of
# the same steps in both trees; the share lives in train_device since the GPU path)
try:
    from onnxprune.recover import train_device as module
except ImportError:
    pass
module.STEP_BYTES = 1 << 62
student, teacher, data, steps, batch, more = sys.argv[1:7]
where = {"device": sys.argv[7]} if len(sys.argv) > 7 else {}  # (an older tree: the CPU)
if len(sys.argv) > 8:  # a precision (this tree's bf16 runs)
    where["precision"] = sys.argv[8]
calib = dict(np.load(data))
out = {}
for n in (1, int(steps), int(steps) + int(more)):  # the first: imports and warm-up
    t = time.perf_counter()
    _, info = distill(student, teacher, calib, steps=n, lr=1e-5, batch_size=int(batch),
                      val_fraction=0.2, patience=None, eval_every=10**6, **where)
    out[n] = {"seconds": time.perf_counter() - t, "steps": info["steps"],
              "loss0": info["history"][0][1]}
print("RESULT " + json.dumps(out))
"""


def prepared(name: str, work: Path) -> tuple[tuple[Path, Path, Path], Path | None]:
    """(student, teacher, data .npz) of one corpus model, and the data trimmed as the recipe
    trims it (None: nothing to trim)."""
    import numpy as np
    import onnx
    from corpus import CORPUS
    from recipe_time import calibration

    from onnxprune.api import prune
    from onnxprune.ir.arrays import Calibration
    from onnxprune.pipeline.support.padding import trim_padding

    model = next(m for m in CORPUS if m.name == name)
    teacher = model.locate(work)
    calib, _, extra = calibration(name, teacher, work)
    student = work / f"{name}.student.onnx"
    prune(teacher, student, target_params=0.3, **extra)
    data = work / f"{name}.npz"
    arrays = {k: v for k, v in calib.items() if isinstance(v, np.ndarray)}
    np.savez(data, **arrays)
    short, trimmed = trim_padding(onnx.load(teacher), Calibration(arrays))
    if trimmed is None:
        return (student, teacher, data), None
    print(f"[{name}] the recipe's data: {trimmed}", flush=True)
    np.savez(work / f"{name}.recipe.npz", **short)
    return (student, teacher, data), work / f"{name}.recipe.npz"


def timed(src: Path, files: tuple[Path, Path, Path], steps: int, more: int, batch: int,
          device: str | None = None, precision: str | None = None) -> dict:
    """One step's time and samples/s of ``src``'s distill on ``files`` (``device``: where it
    trains; None: the tree's default, an older tree's only one; ``precision``: the step's,
    None: the tree's default)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    where = [device] if device else []
    if precision:
        where.append(precision)
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, files), str(steps),
                           str(batch), str(more), *where], capture_output=True, text=True,
                          env=env, cwd=tempfile.gettempdir(), check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{src}: {proc.stderr.strip().splitlines()[-1:]}")
    runs = {int(k): v for k, v in json.loads(line[7:]).items()}
    a, b = runs[steps], runs[steps + more]
    if b["steps"] - a["steps"] != more:
        raise RuntimeError(f"{src}: trained {a['steps']} and {b['steps']} steps")
    per_step = (b["seconds"] - a["seconds"]) / more
    return {"step_seconds": per_step, "samples_per_second": batch / per_step,
            "loss0": a["loss0"]}


def matmul_flops(repeats: int = 20, n: int = 1024, dtype: str = "float32") -> float:
    """The matrix-multiply throughput (FLOP/s) torch reaches here in ``dtype``: the best of
    ``repeats`` products of two n x n matrices, every core."""
    import time

    import torch

    a, b = (torch.randn(n, n).to(getattr(torch, dtype)) for _ in range(2))
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best


def step_flops(student: Path, data: Path, batch: int) -> float:
    """A training step's arithmetic at ``batch`` samples of ``data``'s shapes: forward and
    backward (two products per forward one) of the weighted layers."""
    import numpy as np
    import onnx

    from onnxprune.analysis.size import macs_at
    from onnxprune.ir.graph import import_model, infer_shapes

    arrays = np.load(data)
    names = {i.name for i in onnx.load(student, load_external_data=False).graph.input}
    shapes = {k: [1, *arrays[k].shape[1:]] for k in arrays.files if k in names}
    return 3 * 2 * float(macs_at(infer_shapes(import_model(onnx.load(student))), shapes)) * batch


def native_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (this tree's test, ``train_device``)."""
    import torch

    from onnxprune.recover.train_device import native_bf16 as native

    return native(torch.device("cpu"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", type=Path, required=True,
                    help="a source tree of an earlier onnxprune (its folder holding onnxprune/)")
    ap.add_argument("--models", default="minilm,ppocr-v6-rec")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--more", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="also this tree with --set distill.precision=bf16, where the CPU has "
                         "bfloat16 arithmetic (default: on)")
    args = ap.parse_args()
    trees = {"baseline": args.baseline.resolve(), "current": ROOT}
    rows = {}
    bf16 = args.bf16 and native_bf16()
    if args.bf16 and not bf16:
        print("this CPU has no bfloat16 arithmetic (AVX512-BF16, AMX): no bf16 runs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            files, recipe = prepared(name, Path(tmp))
            variants = {tree: (src, files, None) for tree, src in trees.items()}
            if recipe is not None:
                variants["recipe"] = (ROOT, (*files[:2], recipe), None)
            if bf16:  # this tree, its steps' products in bfloat16 (--set distill.precision=bf16)
                variants["bf16"] = (ROOT, files, "bf16")
                if recipe is not None:
                    variants["recipe_bf16"] = (ROOT, (*files[:2], recipe), "bf16")
            runs: dict[str, list] = {k: [] for k in variants}
            for _ in range(args.repeats):
                for tree, (src, given, precision) in variants.items():
                    runs[tree].append(timed(src, given, args.steps, args.more, args.batch,
                                            "cpu" if src == ROOT else None,  # (CPU to CPU)
                                            precision))
                    print(f"[{name}] {tree}: {runs[tree][-1]}", flush=True)
            row = {tree: {"step_seconds": statistics.median(r["step_seconds"] for r in rs),
                          "loss0": rs[0]["loss0"], "runs": rs} for tree, rs in runs.items()}
            for r in row.values():
                r["samples_per_second"] = args.batch / r["step_seconds"]
            for tree in ("current", "recipe", "bf16", "recipe_bf16"):
                if tree in row:
                    row[f"speedup_{tree}" if tree != "current" else "speedup"] = \
                        row[tree]["samples_per_second"] / row["baseline"]["samples_per_second"]
            peak = matmul_flops()
            peaks = {None: peak, "bf16": matmul_flops(dtype="bfloat16") if bf16 else None}
            for tree, (_, given, precision) in variants.items():
                flops = step_flops(given[0], given[2], args.batch)
                row[tree]["step_gflop"] = flops / 1e9
                row[tree]["floor_step_seconds"] = flops / peaks[precision]
            row["matmul_gflops"] = peak / 1e9
            if bf16:
                row["matmul_gflops_bf16"] = peaks["bf16"] / 1e9
            # the most any step on the baseline's data could gain over the baseline
            row["speedup_at_most"] = row["baseline"]["step_seconds"] / \
                row["baseline"]["floor_step_seconds"]
            if "recipe" in row:  # ... and on the data as the recipe trims it
                row["speedup_at_most_recipe"] = row["baseline"]["step_seconds"] / \
                    row["recipe"]["floor_step_seconds"]
            rows[name] = row
            print(f"[{name}] {row['baseline']['samples_per_second']:.2f} -> "
                  f"{row['current']['samples_per_second']:.2f} samples/s "
                  f"({row['speedup']:.1f}x); first-batch loss "
                  f"{row['baseline']['loss0']:.6g} / {row['current']['loss0']:.6g}", flush=True)
            print(f"[{name}] ceiling: a step {row['current']['step_gflop']:.2f} GFLOP at "
                  f"{row['matmul_gflops']:.0f} GFLOP/s matmul peak: "
                  f"{row['current']['floor_step_seconds']:.4f} s at least, "
                  f"{row['speedup_at_most']:.1f}x the baseline at most"
                  + (f" ({row['speedup_at_most_recipe']:.1f}x on trimmed data)"
                     if "recipe" in row else ""), flush=True)
            if "recipe" in row:
                print(f"[{name}] as the recipe feeds it: "
                      f"{row['recipe']['samples_per_second']:.2f} samples/s "
                      f"({row['speedup_recipe']:.1f}x); first-batch loss "
                      f"{row['recipe']['loss0']:.6g}", flush=True)
            for tree in ("bf16", "recipe_bf16"):
                if tree in row:
                    print(f"[{name}] {tree}: {row[tree]['samples_per_second']:.2f} samples/s "
                          f"({row[f'speedup_{tree}']:.1f}x); first-batch loss "
                          f"{row[tree]['loss0']:.6g} (float32: the step's loss is measured "
                          "before training)", flush=True)
            if bf16:  # the most a bfloat16 step on the baseline's data could gain
                row["speedup_at_most_bf16"] = row["baseline"]["step_seconds"] / \
                    row["bf16"]["floor_step_seconds"]
    # rows of models not asked this time stay (each model has its own --more/--repeats)
    kept = json.loads(RESULTS.read_text()).get("rows", {}) if RESULTS.exists() else {}
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "batch": args.batch,
           "baseline": str(args.baseline), "rows": {**kept, **rows}}
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
