"""The classes a classifier's calibration data makes it answer (pipeline/support/coverage.py):
a run whose data answers few of them says so, once, and reports the count."""

import warnings

import numpy as np
import pytest

from onnxprune.api import prune
from onnxprune.pipeline.support.coverage import answered
from onnxprune.zoo.builder import GraphBuilder

CLASSES = 16


def _classifier():
    b = GraphBuilder(seed=0)
    x = b.input("x", ["batch", 12])
    h = b.op("Relu", [b.gemm(x, 12, 32, name="fc1")])
    h = b.op("Relu", [b.gemm(h, 32, 32, name="fc2")])
    return b.build([b.op("Softmax", [b.gemm(h, 32, CLASSES, name="head")], axis=-1)])


def _run(x, tmp_path):
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        r = prune(_classifier(), tmp_path / "out.onnx", calib={"x": x}, metric="kl",
                  strategy="sensitivity", target_params=0.3, compensate=True)
    return r, [str(w.message) for w in said if "classes of output" in str(w.message)]


def test_data_that_answers_few_classes_is_said_once_and_reported(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(1, 12)) * 3 + rng.normal(size=(64, 12)) * 0.01).astype(np.float32)
    r, said = _run(x, tmp_path)
    got = r.stages["classes_answered"]
    assert len(got) == 1 and got[0]["classes"] == CLASSES and got[0]["answered"] < CLASSES / 2
    assert len(said) == 1  # the search and the stages both look: one warning
    assert f"answers {got[0]['answered']} of the {CLASSES} classes" in said[0]


def test_data_that_answers_most_classes_is_not_warned_about(tmp_path):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(512, 12)) * 4).astype(np.float32)
    r, said = _run(x, tmp_path)
    got = r.stages["classes_answered"]
    assert got[0]["answered"] >= CLASSES / 2 and not said


def test_only_distributions_over_three_classes_or_more_count():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(8, 5, 30))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    two = np.stack([np.full(8, 0.3), np.full(8, 0.7)], -1)
    got = answered([logits, p, two], ["logits", "probs", "decision"])
    assert [g["output"] for g in got] == ["probs"]
    assert got[0] == {"output": "probs", "classes": 30,
                      "answered": len(np.unique(p.reshape(-1, 30).argmax(-1)))}
    with pytest.raises(ValueError):
        answered([p], ["a", "b"])
