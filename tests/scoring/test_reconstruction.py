"""Reconstruction-aware importance: the greedy structured OBS losses are the exact refit
errors, redundant channels go first, and the data-aware default picks it."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from onnxprune.api import prune
from onnxprune.ir.runtime import session
from onnxprune.rules.layers import patch_matrix
from onnxprune.scoring import reconstruction as rec
from onnxprune.zoo.builder import GraphBuilder


@pytest.mark.parametrize("attrs, kernel", [
    ({"strides": [2, 2], "pads": [1, 1, 1, 1]}, (5, 3, 3, 3)),
    ({"dilations": [2, 1], "pads": [2, 0, 1, 1]}, (4, 3, 3, 2)),
    ({}, (4, 3, 1, 1)),
])
def test_numpy_patches_equal_onnxruntime_im2col(attrs, kernel):
    rng = np.random.default_rng(0)
    w = gs.Constant("w", rng.standard_normal(kernel).astype(np.float32))
    node = gs.Node("Conv", inputs=[gs.Variable("x"), w], outputs=[gs.Variable("y")],
                   attrs={**attrs, "kernel_shape": list(kernel[2:])})
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    assert np.array_equal(rec._conv2d_rows(node, x, 10**9, rng), patch_matrix(node, x))


def _refit_error(p, w, keep_cols):
    """min ||P W - P_keep V||^2 over V, by least squares."""
    y = p @ w
    v, *_ = np.linalg.lstsq(p[:, keep_cols], y, rcond=None)
    return float(np.sum((p[:, keep_cols] @ v - y) ** 2))


@pytest.mark.parametrize("k", [1, 3])
def test_cumulative_losses_are_the_exact_refit_errors(k):
    """Fewer channels than greedy rounds: one channel per step, and the loss after each step
    is what an optimal least-squares refit of the remaining channels leaves."""
    rng = np.random.default_rng(1)
    channels = 6
    p = rng.standard_normal((400, channels * k))
    w = rng.standard_normal((channels * k, 5))
    energy = float(np.sum((p @ w) ** 2))
    losses = rec.layer_losses(p, w, k, centre=False, ridge=1e-12)
    order = np.argsort(losses)
    for step in range(1, channels):
        gone = set(order[:step].tolist())
        keep = [c * k + j for c in range(channels) if c not in gone for j in range(k)]
        assert losses[order[step - 1]] == pytest.approx(_refit_error(p, w, keep) / energy,
                                                        rel=1e-6, abs=1e-12)


def test_a_redundant_channel_goes_first_even_with_the_largest_weights():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((500, 4))
    p = np.concatenate([a, a[:, :2] @ rng.standard_normal((2, 1))], axis=1)  # col 4 = mix
    w = rng.standard_normal((5, 3))
    w[4] *= 100.0  # by magnitude the most important
    losses = rec.layer_losses(p, w, 1, centre=False, ridge=1e-12)
    assert int(np.argmin(losses)) in (0, 1, 4) and losses.min() < 1e-8


def _redundant_model(seed=0) -> onnx.ModelProto:
    """fc1 makes 8 features whose last 4 are mixes of the first 2, with LARGE weights in the
    next layer: L2 keeps the mixes (and loses features 2 and 3), reconstruction removes them
    (a refit restores them from features 0 and 1)."""
    b = GraphBuilder(seed=seed)
    rng = np.random.default_rng(seed)
    x = b.input("x", ["batch", 6])
    w1 = rng.standard_normal((4, 6)).astype(np.float32)
    w1 = np.concatenate([w1, rng.standard_normal((4, 2)).astype(np.float32) @ w1[:2]])
    h = b.op("Gemm", [x, b.const(w1)], transB=1, name="fc1")
    w2 = rng.standard_normal((5, 8)).astype(np.float32)
    w2[:, 4:] *= 10.0
    y = b.op("Gemm", [h, b.const(w2), b.const(np.zeros(5, np.float32))], transB=1, name="fc2")
    return b.build([y])


def test_reconstruction_removes_what_a_refit_restores(tmp_path):
    data = {"x": np.random.default_rng(5).standard_normal((200, 6)).astype(np.float32)}
    test = np.random.default_rng(6).standard_normal((100, 6)).astype(np.float32)
    model = _redundant_model()
    want = session(model).run(None, {"x": test})[0]
    errors = {}
    for criterion in ("l2", "reconstruction"):
        out = tmp_path / f"{criterion}.onnx"
        r = prune(model, out, calib=data, ratio=0.5, criterion=criterion, compensate=True,
                  ridge=1e-9, rotate="off")  # the channels as they are (rotated, both cut well)
        assert r.selection["criterion"] == criterion
        got = session(onnx.load(out)).run(None, {"x": test})[0]
        errors[criterion] = float(np.abs(got - want).max() / np.abs(want).max())
    assert errors["reconstruction"] < 1e-4 and errors["l2"] > 0.05


def test_the_default_criterion_is_data_aware_only_with_data():
    model = _redundant_model()
    data = {"x": np.random.default_rng(5).standard_normal((40, 6)).astype(np.float32)}
    assert prune(model, None, ratio=0.5).selection["criterion"] == "l2"
    assert prune(model, None, ratio=0.5, calib=data).selection["criterion"] == "reconstruction"
    assert prune(model, None, ratio=0.5, calib=data, criterion="l1").selection[
        "criterion"] == "l1"
