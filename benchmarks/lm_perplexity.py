"""Perplexity of a small causal LM after pruning 30 % of its parameters, by importance
criterion and recovery.

    python benchmarks/lm_perplexity.py [--cache /tmp/onnxprune-lm] [--targets 0.3,0.5]

The model is ``onnxprune.zoo.causal_lm``: a Llama (hidden 128, 4 layers, 4 query heads over 2
key/value heads, FFN 344, byte vocabulary) trained in code on the Python standard library's
sources (a few minutes of CPU; the weights are cached in ``--cache`` for later runs), exported
with torch.onnx. The files are split by file: calibration windows come from calibration files
only; perplexity is measured with onnxruntime on held-out files only (never trained on, never
calibrated on). The vocabulary axis of the embedding and the LM head is frozen (the logits
are the output); the hidden width, the FFN neurons and the key/value groups (with their query
heads) are pruned. Parameter counts include the embedding and the LM head.

The rows marked "with cache" prune the same model exported with its key/value cache
(``past_key_values.*`` in, ``present.*`` out, as Optimum's ``text-generation-with-past``
exports): calibrated on the second half of each window with the cache the original builds from
the first half, measured by reading each held-out window in two steps through the pruned
model's own cache. The cache interface stays unless the row says ``--prune-kv-cache``.
``--rows`` reruns some rows and keeps the others of the results file.
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
# name -> prune() keywords over the defaults (the --strategy, the calibration windows and the
# perplexity metric, which the search and distillation use on calibration files only)
ROWS = {
    "magnitude (l2), uniform": {"criterion": "l2", "strategy": "uniform"},
    "magnitude (l2)": {"criterion": "l2"},
    "magnitude (l2) + distill": {"criterion": "l2", "recover": "distill"},
    "activation, uniform": {"criterion": "activation", "strategy": "uniform"},
    "activation": {"criterion": "activation"},
    "activation + compensate": {"criterion": "activation", "compensate": True},
    "activation + distill": {"criterion": "activation", "recover": "distill"},
    "activation + compensate + distill": {"criterion": "activation", "compensate": True,
                                          "recover": "distill"},
    "reconstruction + compensate": {"criterion": "reconstruction", "compensate": True},
    "activation, sensitivity": {"criterion": "activation", "strategy": "sensitivity"},
    "activation, sensitivity + distill": {"criterion": "activation", "strategy": "sensitivity",
                                          "recover": "distill"},
}
CACHED = "with cache: "
ROWS.update({
    CACHED + "activation + compensate": {"criterion": "activation", "compensate": True},
    CACHED + "activation + distill": {"criterion": "activation", "recover": "distill"},
    CACHED + "--prune-kv-cache, activation + compensate": {
        "criterion": "activation", "compensate": True, "prune_kv_cache": True},
})


def widths(result) -> str:
    """The kept widths: hidden, FFN per layer, key/value groups per layer."""
    parts: dict[str, list[str]] = {"hidden": [], "ffn": [], "kv": []}
    for g in result.analysis.groups:
        if g.frozen:
            continue
        text = " ".join(g.layers)
        kind = "hidden" if "embed_tokens" in text else "ffn" if "mlp" in text else "kv"
        parts[kind].append(str(result.plan.widths[g.id][1]))
    return ", ".join(f"{k} {'/'.join(v)}" for k, v in parts.items() if v)


def run_row(path: Path, name: str, target: float, args, calib, held, base: float,
            params: int) -> dict:
    options = {"target_params": target, "strategy": args.strategy, "calib": calib,
               "metric": "perplexity", **ROWS[name]}
    if options.get("recover") == "distill":
        options.update(distill_steps=args.distill_steps, distill_lr=args.distill_lr)
    t = time.perf_counter()
    r = prune(path, **options)
    seconds = time.perf_counter() - t
    ppl = lm.perplexity(r.model, held)
    return {"row": name, "target": target, "removed": 1 - lm.param_count(r.model) / params,
            "ppl": ppl, "ratio": ppl / base, "seconds": seconds, "widths": widths(r),
            "options": {k: v for k, v in options.items() if k != "calib"},
            "calib_ppl": (r.quality or {}).get("after_recovery", (r.quality or {}).get("after")),
            "timings": {k: round(v, 2) for k, v in r.timings.items() if v >= 0.05}}


def _kept_rows(fresh: list[dict], base: float) -> list[dict]:
    """The rows of the results file not rerun now, when they were measured on the same
    original model (the same held-out perplexity)."""
    path = RESULTS / "lm_perplexity.json"
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    if abs(old["meta"]["ppl"] - base) > 1e-6:
        return []
    done = {(r["row"], r["target"]) for r in fresh}
    return [r for r in old["rows"] if (r["row"], r["target"]) not in done]


def _markdown(meta: dict, rows: list[dict]) -> str:
    trained = meta["training"]
    how = (f"trained {trained['steps']} steps ({trained['seconds']:.0f} s of CPU)" if trained
           else "trained in code")
    lines = ["# Causal LM perplexity after pruning", "",
             f"Llama ({meta['params']:,} parameters) {how} on the standard library's sources; "
             f"held-out perplexity over {meta['heldout_windows']} windows of {meta['seq']} bytes "
             f"of held-out files; calibration: {meta['calib_windows']} windows of calibration "
             f"files. Strategy {meta['strategy']} unless the row says otherwise; distillation "
             f"{meta['distill_steps']} steps at most (KL on the logits, early stopping on a "
             f"fifth of the calibration windows).", "",
             f"Original held-out perplexity: **{meta['ppl']:.3f}** "
             f"({meta.get('ppl_cached', meta['ppl']):.3f} read in two steps through its cache).",
             "",
             "| target | row | params removed | held-out ppl | ratio | kept widths | wall s |",
             "|---:|---|---:|---:|---:|---|---:|"]
    lines += [f"| {r['target']:.0%} | {r['row']} | {r['removed']:.1%} | {r['ppl']:.3f} | "
              f"{r['ratio']:.3f} | {r['widths']} | {r['seconds']:.0f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "onnxprune-lm"))
    ap.add_argument("--targets", default="0.3", help="fractions of the parameters removed")
    ap.add_argument("--strategy", default="global")
    ap.add_argument("--calib", type=int, default=512, help="calibration windows")
    ap.add_argument("--heldout", type=int, default=512, help="held-out windows")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--distill-steps", type=int, default=600)
    ap.add_argument("--distill-lr", type=float, default=1e-3)
    ap.add_argument("--rows", default="", help="row names separated by semicolons (default: all)")
    args = ap.parse_args()
    console = Console(width=140)
    model = lm.trained(args.cache, log=console.log)
    calib = lm.windows("calib", args.calib, args.seq, seed=1)
    held = lm.windows("heldout", args.heldout, args.seq)
    chosen = [r.strip() for r in args.rows.split(";") if r.strip()] or list(ROWS)
    unknown = [r for r in chosen if r not in ROWS]
    if unknown:
        ap.error(f"unknown row {unknown[0]!r}; rows: {'; '.join(ROWS)}")
    targets = [float(t) for t in args.targets.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = lm.export(model, Path(tmp) / "lm.onnx")
        cached = lm.export(model, Path(tmp) / "lm_cache.onnx", cache=True)
        base = lm.perplexity(path, held)
        params = lm.param_count(onnx.load(str(path)))
        base_cached = lm.perplexity(cached, held)
        calib_cached = lm.with_past(cached, calib, args.seq // 2)
        console.log(f"original: {params:,} parameters, held-out perplexity {base:.3f} "
                    f"({base_cached:.3f} with the cache)")
        for target in targets:
            for name in chosen:
                on_cache = name.startswith(CACHED)
                rows.append(run_row(cached if on_cache else path, name, target, args,
                                    calib_cached if on_cache else calib, held,
                                    base_cached if on_cache else base, params))
                r = rows[-1]
                console.log(f"{target:.0%} {name}: removed {r['removed']:.1%}, held-out ppl "
                            f"{r['ppl']:.3f} ({r['ratio']:.3f}x), {r['widths']}, "
                            f"{r['seconds']:.0f} s")
    order = list(ROWS)
    rows = sorted(_kept_rows(rows, base) + rows,
                  key=lambda r: (r["target"], order.index(r["row"]) if r["row"] in order else 99))
    targets = sorted({r["target"] for r in rows})
    meta = {"targets": targets, "ppl_cached": base_cached, "strategy": args.strategy, "params": params, "ppl": base,
            "training": lm.training_record(args.cache), "calib_windows": args.calib,
            "heldout_windows": args.heldout, "seq": args.seq,
            "distill_steps": args.distill_steps, "distill_lr": args.distill_lr,
            "config": lm.asdict(lm.LMConfig())}
    table = Table(title=f"held-out perplexity (original {base:.3f})")
    for col in ("target", "row", "params removed", "held-out ppl", "ratio", "widths", "wall s"):
        table.add_column(col, justify="left" if col in ("row", "widths") else "right")
    for r in rows:
        table.add_row(f"{r['target']:.0%}", r["row"], f"{r['removed']:.1%}", f"{r['ppl']:.3f}",
                      f"{r['ratio']:.3f}", r["widths"], f"{r['seconds']:.0f}")
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lm_perplexity.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                           indent=1) + "\n")
    (RESULTS / "lm_perplexity.md").write_text(_markdown(meta, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
