"""OCR pages for benchmarks/task_quality.py: lines rendered with Pillow (calibration: the
built-in font, lower-case words, black on white; held-out: the machine's TTF fonts, grey on
tinted paper, noise, blur, capitals, numbers, dates, codes; a quarter upside down), read back
through the whole rapidocr pipeline, and the crops each model of it sees."""

from __future__ import annotations

import contextlib
import glob
import io
import string
import subprocess
from pathlib import Path

import numpy as np
import task_metrics as tm

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


def cover_line(rng) -> str:
    """A calibration line that reads the kinds of characters the held-out lines hold
    (capitals, digits, currency, dates, codes, punctuation) with the calibration words, so
    that no held-out word or line template is seen; a third are plain calibration lines."""
    w = str(rng.choice(CALIB_WORDS))
    kind = int(rng.integers(0, 9))
    if kind == 0:
        return f"{w.upper()} {int(rng.integers(0, 9999))}"
    if kind == 1:
        return f"{w.capitalize()}: ${rng.integers(1, 999)}.{rng.integers(0, 99):02d}"
    if kind == 2:
        return f"{rng.integers(1, 31):02d}.{rng.integers(1, 12):02d}.{rng.integers(1950, 2050)} {w}"
    if kind == 3:
        return f"#{rng.integers(10, 999)}/{chr(65 + int(rng.integers(0, 26)))}{w[:2].upper()}"
    if kind == 4:
        return f"{w.capitalize()} {rng.choice(CALIB_WORDS)}?"
    if kind == 5:
        return f"[{rng.integers(0, 99)}] {w}-{rng.integers(0, 9)}%"
    return calib_line(rng)


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


def make_pages(n: int, held: bool, seed: int, fonts: list[str], cover: bool = False
               ) -> list[dict]:
    """Pages of two lines; every fourth upside down (boxes moved accordingly). ``cover``:
    calibration pages whose lines read the held-out lines' kinds of characters
    (``cover_line``), in the calibration style."""
    rng = np.random.default_rng(seed)
    line = held_line if held else cover_line if cover else calib_line
    pages = []
    for i in range(n):
        lines = [line(rng) for _ in range(2)]
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


