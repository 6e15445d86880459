"""Distillation on a GPU against the CPU: samples per second through a training step (forward,
backward, Adam) of the same student on the same data, on the CPU and on every GPU torch sees,
side by side in one run, with the first batch's loss on each (the same loss).

    python benchmarks/distill_device.py [--baseline /tmp/onnxprune-base]

Models built in code (nothing downloaded; ``transformers`` and ``torch`` installed): an
encoder of all-MiniLM-L6-v2's shape (BERT, hidden 384, 6 layers, 12 heads, FFN 1536; random
weights; 32-token sentences, mask all ones) and the zoo's ResNet-50 (224 x 224). Each student
is the model's plain 30% cut (uniform, no data), its teacher the original, 64 random samples.
One step's time is the difference of a ``--steps`` and a ``--steps + --more`` step run after a
one-step warm-up (``distill_throughput.timed``: validation and early stopping off, a child
process per run); ``--repeats`` rounds, medians. ``--baseline TREE`` (an earlier onnxprune,
e.g. ``git worktree add /tmp/onnxprune-base b83fbdb^``, the code issue 34 measured) adds that
tree on the CPU: the issue's "10x today's" is the GPU's samples/s over it. Where the GPU has
bfloat16 arithmetic, "cuda-bf16" times the same steps with ``--set distill.precision=bf16``.
Without a GPU only the CPU rows are measured. Results: benchmarks/results/distill_device.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results" / "distill_device.json"
MINILM = {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
          "num_attention_heads": 12, "intermediate_size": 1536, "max_position_embeddings": 512}
SAMPLES = 64


def prepared(name: str, work: Path) -> tuple[Path, Path, Path]:
    """(student, teacher, data .npz) of one model built in code."""
    import numpy as np

    from onnxprune.api import prune

    teacher = work / f"{name}.onnx"
    if name == "minilm-shaped":
        from onnxprune.zoo import transformers_zoo

        transformers_zoo.export("bert", teacher, config=MINILM, seq=32)
        ids, mask = transformers_zoo.sample_inputs(SAMPLES, 32)
        data = {"input_ids": ids.numpy(), "attention_mask": np.ones_like(mask.numpy())}
    else:
        from onnxprune.zoo.torch_zoo import ZOO, export_zoo_model

        export_zoo_model(name, teacher, dynamic_batch=True)
        data = {"input": np.random.default_rng(0).standard_normal(
            (SAMPLES, *ZOO[name][1])).astype(np.float32)}
    student = work / f"{name}.student.onnx"
    prune(teacher, student, ratio=0.3)
    np.savez(work / f"{name}.npz", **data)
    return student, teacher, work / f"{name}.npz"


def main() -> int:
    import torch
    from distill_throughput import timed

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="minilm-shaped,resnet50")
    ap.add_argument("--baseline", type=Path, help="an earlier onnxprune's source tree (CPU)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--more", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    runs_on = {"cpu": (ROOT, "cpu", None)}
    if torch.cuda.is_available():
        runs_on["cuda"] = (ROOT, "cuda", None)
        if torch.cuda.is_bf16_supported(including_emulation=False):  # distill.precision=bf16
            runs_on["cuda-bf16"] = (ROOT, "cuda", "bf16")
    else:
        print("torch sees no CUDA GPU: the CPU rows alone", flush=True)
    if args.baseline is not None:
        runs_on["baseline-cpu"] = (args.baseline.resolve(), None, None)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            files = prepared(name, Path(tmp))
            runs: dict[str, list] = {k: [] for k in runs_on}
            for _ in range(args.repeats):
                for key, (src, device, precision) in runs_on.items():
                    runs[key].append(timed(src, files, args.steps, args.more, args.batch, device,
                                           precision))
                    print(f"[{name}] {key}: {runs[key][-1]}", flush=True)
            row = {key: {"step_seconds": statistics.median(r["step_seconds"] for r in rs),
                         "loss0": rs[0]["loss0"], "runs": rs} for key, rs in runs.items()}
            for r in row.values():
                r["samples_per_second"] = args.batch / r["step_seconds"]
            sps = {k: v["samples_per_second"] for k, v in row.items()}
            ratios = [("cuda", "cpu"), ("cpu", "baseline-cpu"), ("cuda", "baseline-cpu"),
                      ("cuda-bf16", "cuda"), ("cuda-bf16", "baseline-cpu")]
            row.update({f"{a}_over_{b}": sps[a] / sps[b] for a, b in ratios
                        if a in sps and b in sps})
            rows[name] = row
            print(f"[{name}] samples/s: " + ", ".join(
                f"{k} {v['samples_per_second']:.1f} (first-batch loss {v['loss0']:.6g})"
                for k, v in row.items() if isinstance(v, dict)) + "; " + ", ".join(
                f"{k} {v:.1f}x" for k, v in row.items() if not isinstance(v, dict)), flush=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "gpu": gpu,
           "torch": torch.__version__, "batch": args.batch, "rows": rows}
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
