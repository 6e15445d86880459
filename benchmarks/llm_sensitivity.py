"""A 250M-parameter Llama-shaped model through the sensitivity search with compensation, beside a
uniform prune of the same target (issue 34): wall time and peak resident memory, sampled from
outside each run.

    python benchmarks/llm_sensitivity.py [--hidden 1024] [--layers 20] [--ffn 2816]
        [--vocab 32000] [--calib 32] [--target 0.3]

The model is built from a ``LlamaConfig`` in code (random weights, grouped-query attention with
4 key/value heads of 16, no LM head) and exported with dynamic batch and sequence
(onnxprune.zoo.transformers_zoo). Runs, each a child process:

- uniform: ``--target-params 0.3`` (no data);
- sensitivity: ``--strategy sensitivity --calib-random 32 --target-params 0.3 --compensate``.

Prints seconds, peak MB and their ratios; writes benchmarks/results/llm_sensitivity.json.
Needs the ``transformers`` extra (dev).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results" / "llm_sensitivity.json"


def export(path: Path, hidden: int, layers: int, ffn: int, vocab: int, seq: int) -> int:
    """The Llama export at ``path``; returns its parameter count."""
    from onnxprune.zoo import transformers_zoo as tz

    kwargs = {"vocab_size": vocab, "hidden_size": hidden, "num_attention_heads": 16,
              "num_key_value_heads": 4, "num_hidden_layers": layers, "intermediate_size": ffn,
              "max_position_embeddings": max(seq, 128)}
    tz.ARCHS["llama250m"] = tz.Arch("llama250m", "LlamaConfig", kwargs, True)
    tz.export("llama250m", path, batch=2, seq=16)
    import onnx

    m = onnx.load(str(path), load_external_data=True)
    return int(sum(int(onnx.numpy_helper.to_array(t).size) for t in m.graph.initializer))


def main() -> int:
    from recipe_time import measured, stage_seconds

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--ffn", type=int, default=2816)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--target", type=float, default=0.3)
    ap.add_argument("--seq", type=int, default=32, help="sequence length of the random samples")
    args = ap.parse_args()
    runs: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "llama.onnx"
        t0 = time.perf_counter()
        params = export(src, args.hidden, args.layers, args.ffn, args.vocab, args.seq)
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        print(f"exported {params / 1e6:.1f}M parameters ({size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        shapes = {"input_shapes": {"input_ids": [1, args.seq], "attention_mask": [1, args.seq]}}
        plans = {
            "uniform": {"target_params": args.target},
            "sensitivity": {"target_params": args.target, "strategy": "sensitivity",
                            "calib_random": args.calib, "compensate": True, **shapes},
        }
        for name, options in plans.items():
            print(f"[{name}] ...", flush=True)
            row = measured(src, Path(tmp) / f"{name}.onnx", options)
            if "timings" in row:
                row["stage_seconds"] = stage_seconds(row.pop("timings"))
            row.pop("recovery", None)
            runs[name] = row
            print(f"[{name}] {row.get('error') or ''} {row['seconds']:.1f} s, peak "
                  f"{row['peak_rss_mb']} MB, params {row.get('params_after')}", flush=True)
    u, s = runs["uniform"], runs["sensitivity"]
    ratios = {"time": s["seconds"] / u["seconds"], "peak": s["peak_rss_mb"] / u["peak_rss_mb"]}
    print(f"sensitivity / uniform: time {ratios['time']:.1f}x, peak memory "
          f"{ratios['peak']:.2f}x (goal: within 10 minutes, peak <= 3x uniform)")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "model": {"params": params, "file_mb": round(size / 1e6), "hidden": args.hidden,
                  "layers": args.layers, "ffn": args.ffn, "vocab": args.vocab},
        "calib": args.calib, "seq": args.seq, "target_params": args.target,
        "runs": runs, "ratios": {k: round(v, 2) for k, v in ratios.items()}}, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
