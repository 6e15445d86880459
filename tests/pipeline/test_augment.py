"""Calibration copies in other styles for the refit: restyled images."""

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from onnxprune.api import prune
from onnxprune.ir.arrays import Calibration
from onnxprune.pipeline.support.augment import (
    _blur,
    _shifted,
    _slant,
    image_inputs,
    with_image_copies,
)
from onnxprune.zoo.builder import GraphBuilder, demo_cnn


def _strokes(n=6, seed=0):
    """Dark vertical strokes on light paper, 1 x 24 x 40, values in [-1, 1]."""
    rng = np.random.default_rng(seed)
    x = np.ones((n, 1, 24, 40), np.float32)
    for img in x:
        for col in rng.choice(np.arange(4, 36), 4, replace=False):
            img[0, 4:20, col] = -1.0
    return x


def test_strokes_thicken_and_thin_and_rows_slant():
    x = _strokes(1)[0]
    dark = (x < 0).sum()
    assert (_shifted(x, np.minimum) < 0).sum() > dark > (_shifted(x, np.maximum) < 0).sum()
    slanted = _slant(x, shear=0.5, scale=1.0)
    top, bottom = slanted[0, 4], slanted[0, 19]
    assert not np.array_equal(top, bottom)  # each row moved by its own offset
    assert np.allclose(_slant(x, 0.0, 1.0), x)  # no slant, no stretch: the image itself
    assert np.isclose(_blur(np.full((1, 5, 5), 0.3, np.float32)), 0.3).all()


def test_image_copies_follow_the_data_restyled_in_its_range():
    graph = gs.import_onnx(demo_cnn())  # "image": N x 3 x 32 x 32
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (5, 3, 32, 32)).astype(np.float32)
    data = Calibration({"image": x, "labels": np.arange(5)})
    assert image_inputs(graph, data) == {"image": 1}
    got = with_image_copies(graph, data, 2, seed=3)
    assert got["image"].shape == (15, 3, 32, 32) and got["image"].dtype == np.float32
    assert np.array_equal(got["image"][:5], x)
    assert np.array_equal(got["labels"], np.tile(np.arange(5), 3))
    copies = got["image"][5:]
    assert copies.min() >= x.min() and copies.max() <= x.max()
    assert np.abs(copies[:5] - x).mean() > 0.05 and not np.array_equal(copies[:5], copies[5:])
    again = with_image_copies(graph, data, 2, seed=3)
    assert np.array_equal(again["image"], got["image"])  # seeded
    assert with_image_copies(graph, data, 0) is None


def test_channels_last_images_and_models_without_images():
    b = GraphBuilder(seed=0)
    x = b.input("x", ["batch", 20, 20, 3])
    graph = gs.import_onnx(b.build([b.op("Relu", [x])]))
    data = Calibration({"x": np.random.default_rng(0).random((4, 20, 20, 3), np.float32)})
    assert image_inputs(graph, data) == {"x": 3}
    assert with_image_copies(graph, data, 1)["x"].shape == (8, 20, 20, 3)
    b = GraphBuilder(seed=0)
    v = b.input("v", ["batch", 6])
    flat = gs.import_onnx(b.build([b.op("Relu", [v])]))
    assert with_image_copies(flat, Calibration({"v": np.zeros((4, 6), np.float32)}), 2) is None


def test_compensation_fits_the_restyled_copies_when_asked():
    model = demo_cnn()
    calib = {"image": np.random.default_rng(2).uniform(0, 1, (20, 3, 32, 32)).astype(np.float32)}
    r = prune(model, ratio=0.4, calib=calib, compensate=True, compensate_augment=2)
    assert r.recovery["compensate_data"] == {"samples": 16 * 3, "copies": 2,
                                             "style": "restyled images"}
    plain = prune(model, ratio=0.4, calib=calib, compensate=True)  # auto: none for images
    assert "compensate_data" not in plain.recovery
    with pytest.raises(Exception, match="compensate.augment: must be 'auto' or a whole number"):
        prune(model, ratio=0.4, calib=calib, compensate=True, compensate_augment=-1)
