"""Progress on long work (onnxprune.progress): what its lines say."""

import contextlib

import numpy as np
import pytest

pytest.importorskip("torch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from onnxprune import progress  # noqa: E402
from onnxprune.recover.distill import distill  # noqa: E402


def _linear(seed: int):
    """x [n, 6] -> MatMul -> y [n, 3]."""
    w = np.random.default_rng(seed).standard_normal((6, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_distillation_progress_says_its_steps_are_a_bound(monkeypatch):
    """Distillation stops early (patience, the guard, divergence): its progress line counts the
    steps and the time left as "at most" the budget's (an ETA of a minute for a run that ended
    in four seconds read as a promise)."""
    lines = []
    real = progress.task

    @contextlib.contextmanager
    def watched(description, total, at_most=False):
        with real(description, total, at_most) as advance:
            def step(n=1, status=None, total=None):
                advance(n, status, total)
                lines.append(progress.status_line())
            yield step

    monkeypatch.setattr("onnxprune.recover.distill.task", watched)
    progress.enable("lines")
    try:
        x = np.random.default_rng(2).standard_normal((40, 6)).astype(np.float32)
        _, info = distill(_linear(1), _linear(0), {"x": x}, steps=50, lr=1e-2, patience=None)
        with progress.task("sensitivity", 10) as advance:  # a count that is not a bound
            advance(1)
            plain = progress.status_line()
    finally:
        progress.enable("off")
    assert info["steps"] == 50
    assert "distill 1/at most 50" in lines[0] and ", ETA at most " in lines[0], lines[0]
    assert "sensitivity 1/10" in plain and "at most" not in plain, plain
