"""PP-OCR's recognizer keeping only the classes an English line needs (``-m real``): 43% fewer
parameters, the same interface and dictionary, and the same reading of rendered lines."""

from __future__ import annotations

import string

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from corpus import CORPUS, available

from onnxprune.api import prune

pytestmark = pytest.mark.real

REC = next(m for m in CORPUS if m.name == "ppocr-v6-rec")
LINES = ("Invoice 2041", "Total: $18.50", "hello world", "No.77-B QUARTZ", "(12) Oslo-3",
         "03/11/2024")


def _crop(text: str) -> np.ndarray:
    """The line rendered black on white, as the recognizer reads it: height 48, width 320,
    scaled to [-1, 1], CHW."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=28)
    w = int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(text, font=font)) + 16
    img = Image.new("RGB", (w, 48), "white")
    ImageDraw.Draw(img).text((8, 8), text, fill="black", font=font)
    x = np.full((48, 320, 3), 255, np.uint8)
    x[:, :min(w, 320)] = np.asarray(img)[:, :320]
    return ((x.astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)


def _read(session, x: np.ndarray, chars: list[str]) -> list[str]:
    ids = session.run(None, {session.get_inputs()[0].name: x})[0].argmax(-1)
    out = []
    for row in ids:
        text, prev = [], 0
        for i in row:
            if i != prev and i != 0:
                text.append(chars[i])
            prev = i
        out.append("".join(text))
    return out


def test_the_recognizer_keeping_latin_classes_reads_lines_as_before(tmp_path):
    if not available(REC):
        pytest.skip("rapidocr is not installed (pip install -e '.[real]')")
    path = REC.locate(tmp_path)
    source = onnx.load(str(path))
    dictionary = next(p.value for p in source.metadata_props if p.key == "character")
    chars = ["", *dictionary.splitlines(), " "]  # the CTC blank first, rapidocr's space last
    printable = set(string.ascii_letters + string.digits + string.punctuation)
    keep = [0] + [i for i, c in enumerate(chars) if c in printable] + [len(chars) - 1]
    out = tmp_path / "rec.onnx"
    r = prune(path, out, keep_classes=keep, ratio=0.0, input_shapes={"x": [1, 3, 48, 320]})
    assert r.classes["kept"] == len(keep) == 96 and r.classes["classes"] == len(chars)
    assert r.params_after < 0.58 * r.params_before and r.verification.passed
    written = onnx.load(str(out))
    assert {p.key: p.value for p in written.metadata_props}["character"] == dictionary
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    before = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    x = np.stack([_crop(t) for t in LINES])
    want, got = _read(before, x, chars), _read(after, x, chars)
    assert sum(w.replace(" ", "") == t.replace(" ", "") for w, t in zip(want, LINES, strict=True)) >= 4, want
    assert got == want
