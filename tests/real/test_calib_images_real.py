"""PP-OCR's recognizer calibrated from a folder of text-line images (``-m real``): the lines
rapidocr crops from rendered pages, saved as PNGs and read back with the recognizer's own
preprocessing spelled as flags (BGR, height 48, padded right to 320, (x - 0.5) / 0.5, the
padding zero, OpenCV's resize), give what rapidocr feeds the model, and a prune from the folder
is the prune from the .npz of rapidocr's arrays: the same cut, the same figures."""

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
         "calib_resampler": "opencv", "input_shapes": {"x": [1, 3, 48, 320]}}


def test_rec_from_a_folder_of_line_images_matches_the_npz_route(tmp_path):
    if not available(REC) or importlib.util.find_spec("PIL") is None:
        pytest.skip("rapidocr or Pillow is not installed (pip install -e '.[real,data]')")
    import cv2
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
        for crop in crops:  # lines wider than 320 at height 48 squeezed, as rapidocr does
            cv2.imwrite(str(folder / f"{len(want):03d}.png"), crop)  # a BGR array, written as RGB
            want.append(rec.resize_norm_img(crop, 320 / 48))
    assert len(want) >= 20
    want = np.stack(want).astype(np.float32)
    got = read(folder, input_specs(onnx.load(str(path), load_external_data=False)), Settings(
        normalize=((0.5,), (0.5,)), resize="pad", bgr=True, shapes={"x": [1, 3, 48, 320]},
        resampler="opencv"))
    x = got.arrays["x"]
    assert x.shape == want.shape
    # rapidocr's arrays: the same 8-bit pixels (one 8-bit step is 0.0078 here), float32 rounding
    np.testing.assert_allclose(x, want, rtol=0, atol=1e-6)
    np.savez(tmp_path / "rec.npz", x=want)
    a = prune(path, None, calib=str(folder), target_params=0.3, **FLAGS)
    b = prune(path, None, calib=str(tmp_path / "rec.npz"), target_params=0.3,
              input_shapes=FLAGS["input_shapes"])
    assert np.array_equal(a.plan.removed, b.plan.removed)
    assert a.stages == b.stages  # every stage's figure on the calibration and held-out data
    assert a.calibration.startswith(f"{len(want)} image(s)") and "(OpenCV)" in a.calibration
