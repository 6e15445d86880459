"""PP-OCR's recognizer calibrated from a folder of text-line images (``-m real``): the lines
rapidocr crops from rendered pages, saved as PNGs and read back with the recognizer's own
preprocessing spelled as flags (BGR, height 48, padded right to 320, (x - 0.5) / 0.5, the
padding zero), give what rapidocr feeds the model (up to its resampler), the recognizer reads
them alike, and a prune from the folder cuts nearly the channels a prune from the .npz cuts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from corpus import CORPUS, available

from onnxprune.api import prune
from onnxprune.calib import Settings, read
from onnxprune.ir.shapes import input_specs

pytestmark = pytest.mark.real

REC = next(m for m in CORPUS if m.name == "ppocr-v6-rec")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
FLAGS = {"calib_normalize": "0.5/0.5", "calib_resize": "pad", "calib_channels": "bgr",
         "input_shapes": {"x": [1, 3, 48, 320]}}


def test_rec_from_a_folder_of_line_images_matches_the_npz_route(tmp_path):
    if not available(REC) or importlib.util.find_spec("PIL") is None:
        pytest.skip("rapidocr or Pillow is not installed (pip install -e '.[real,data]')")
    import cv2
    import onnxruntime as ort
    from ocr_pages import held_fonts, make_pages, ocr_engine

    path = REC.locate(tmp_path)
    engine = ocr_engine()
    rec = engine._load_rec_model()
    folder = tmp_path / "lines"
    folder.mkdir()
    want = []
    for page in make_pages(16, False, 1, held_fonts()):
        img, record = engine.preprocess_img(page["image"])
        crops, _ = engine.detect_and_crop(img, record)
        for crop in crops:
            if crop.shape[1] * 48 > 320 * crop.shape[0]:
                continue  # wider than 320 at height 48: rapidocr stretches it, pad keeps its ratio
            cv2.imwrite(str(folder / f"{len(want):03d}.png"), crop)  # a BGR array, written as RGB
            want.append(rec.resize_norm_img(crop, 320 / 48))
    assert len(want) >= 20
    want = np.stack(want).astype(np.float32)
    got = read(folder, input_specs(onnx.load(str(path), load_external_data=False)), Settings(
        normalize=((0.5,), (0.5,)), resize="pad", bgr=True, shapes={"x": [1, 3, 48, 320]}))
    x = got.arrays["x"]
    assert x.shape == want.shape
    assert np.mean(np.abs(x - want)) < 0.03  # Pillow's and OpenCV's bilinear resampling
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = [np.concatenate([s.run(None, {"x": a[i:i + 8]})[0] for i in range(0, len(a), 8)]
           ).argmax(-1) for a in (x, want)]
    assert np.mean(ids[0] == ids[1]) >= 0.97  # the recognizer reads them alike
    np.savez(tmp_path / "rec.npz", x=want)
    a = prune(path, None, calib=str(folder), target_params=0.3, **FLAGS)
    b = prune(path, None, calib=str(tmp_path / "rec.npz"), target_params=0.3,
              input_shapes=FLAGS["input_shapes"])
    ra, rb = a.plan.removed, b.plan.removed
    # the channels cut from the two: nearly the same (measured 0.91). Their held-out cosines
    # are not compared: a uniform 30% cut of this recognizer sits on a knife edge (the two
    # read 0.57 and 0.27 while 91% of their cuts agree)
    assert (ra & rb).sum() / max((ra | rb).sum(), 1) >= 0.85
    assert a.calibration.startswith(f"{len(want)} image(s)")
