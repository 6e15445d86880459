"""Perplexity of a small causal LM after pruning 30 % of its parameters, by importance
criterion and recovery.

    python benchmarks/lm_perplexity.py [--cache /tmp/onnxprune-lm] [--target 0.3]

The model is ``onnxprune.zoo.causal_lm``: a Llama (hidden 128, 4 layers, 4 query heads over 2
key/value heads, FFN 344, byte vocabulary) trained in code on the Python standard library's
sources (a few minutes of CPU; the weights are cached in ``--cache`` for later runs), exported
with torch.onnx. The files are split by file: calibration windows come from calibration files
only; perplexity is measured with onnxruntime on held-out files only (never trained on, never
calibrated on). The vocabulary axis of the embedding and the LM head is frozen (the logits
are the output); the hidden width, the FFN neurons and the key/value groups (with their query
heads) are pruned. Parameter counts include the embedding and the LM head.
Needs the transformers extra.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import onnx
from rich.console import Console
from rich.table import Table

from onnxprune.api import prune
from onnxprune.zoo import causal_lm as lm

RESULTS = Path(__file__).parent / "results"
DATA = {"metric": "perplexity"}
# name -> prune() keywords; the data-driven rows get the calibration windows and the metric
ROWS = {
    "magnitude (l2)": {"criterion": "l2"},
    "magnitude (l2) + distill": {"criterion": "l2", "recover": "distill"},
    "activation": {"criterion": "activation"},
    "activation + compensate": {"criterion": "activation", "compensate": True},
    "activation + distill": {"criterion": "activation", "recover": "distill"},
    "activation + compensate + distill": {"criterion": "activation", "compensate": True,
                                          "recover": "distill"},
}


def _markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"# Causal LM perplexity after pruning {meta['target']:.0%} of the parameters", "",
             f"Llama ({meta['params']:,} parameters) trained {meta['train_seconds']:.0f} s on "
             f"the standard library's sources; held-out perplexity over "
             f"{meta['heldout_windows']} windows of {meta['seq']} bytes of held-out files; "
             f"calibration: {meta['calib_windows']} windows of calibration files. "
             f"Strategy {meta['strategy']}.", "",
             "| row | params removed | held-out ppl | ratio | wall s |",
             "|---|---:|---:|---:|---:|",
             f"| original | 0% | {meta['ppl']:.3f} | 1.000 | - |"]
    lines += [f"| {r['row']} | {r['removed']:.1%} | {r['ppl']:.3f} | {r['ratio']:.3f} | "
              f"{r['seconds']:.0f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "onnxprune-lm"))
    ap.add_argument("--target", type=float, default=0.3, help="fraction of parameters removed")
    ap.add_argument("--strategy", default="global")
    ap.add_argument("--calib", type=int, default=512, help="calibration windows")
    ap.add_argument("--heldout", type=int, default=512, help="held-out windows")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--distill-steps", type=int, default=600)
    ap.add_argument("--distill-lr", type=float, default=1e-3)
    ap.add_argument("--rows", default="", help="comma-separated row names (default: all)")
    args = ap.parse_args()
    console = Console(width=120)
    t0 = time.perf_counter()
    model = lm.trained(args.cache, log=console.log)
    train_s = time.perf_counter() - t0
    calib = lm.windows("calib", args.calib, args.seq, seed=1)
    held = lm.windows("heldout", args.heldout, args.seq)
    chosen = [r.strip() for r in args.rows.split(",") if r.strip()] or list(ROWS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = lm.export(model, Path(tmp) / "lm.onnx")
        base = lm.perplexity(path, held)
        params = lm.param_count(onnx.load(str(path)))
        console.log(f"original: {params:,} parameters, held-out perplexity {base:.3f}")
        for name in chosen:
            t = time.perf_counter()
            r = prune(path, target_params=args.target, strategy=args.strategy, calib=calib,
                      distill_steps=args.distill_steps, distill_lr=args.distill_lr, **DATA,
                      **ROWS[name])
            seconds = time.perf_counter() - t
            ppl = lm.perplexity(r.model, held)
            removed = 1 - lm.param_count(r.model) / params
            rows.append({"row": name, "options": ROWS[name], "removed": removed, "ppl": ppl,
                         "ratio": ppl / base, "seconds": seconds,
                         "timings": {k: round(v, 2) for k, v in r.timings.items()}})
            console.log(f"{name}: removed {removed:.1%}, held-out ppl {ppl:.3f} "
                        f"({ppl / base:.3f}x), {seconds:.0f} s")
    meta = {"target": args.target, "strategy": args.strategy, "params": params, "ppl": base,
            "train_seconds": train_s, "calib_windows": args.calib,
            "heldout_windows": args.heldout, "seq": args.seq,
            "distill_steps": args.distill_steps, "distill_lr": args.distill_lr,
            "config": lm.asdict(lm.LMConfig())}
    table = Table(title=f"held-out perplexity, {args.target:.0%} of parameters removed")
    for col in ("row", "params removed", "held-out ppl", "ratio", "wall s"):
        table.add_column(col, justify="left" if col == "row" else "right")
    table.add_row("original", "0%", f"{base:.3f}", "1.000", "-")
    for r in rows:
        table.add_row(r["row"], f"{r['removed']:.1%}", f"{r['ppl']:.3f}", f"{r['ratio']:.3f}",
                      f"{r['seconds']:.0f}")
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lm_perplexity.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                           indent=1) + "\n")
    (RESULTS / "lm_perplexity.md").write_text(_markdown(meta, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
