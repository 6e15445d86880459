"""Compensation: refit layers that lost inputs so they reproduce the original layer."""

import numpy as np
import onnx
import pytest

from onnxprune.api import prune
from onnxprune.errors import UsageError
from onnxprune.ir.runtime import session
from onnxprune.zoo.builder import GraphBuilder


def _redundant(kind: str, seed: int = 0):
    """A first layer whose last 4 of 8 output channels are linear mixes of the first 4, a
    linear path, then a second layer: removing the mixes loses nothing a refit cannot restore."""
    b = GraphBuilder(seed=seed)
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((4, 4)).astype(np.float32) * 0.1  # small: lowest norms
    if kind == "gemm":
        x = b.input("x", ["batch", 6])
        w1 = rng.standard_normal((4, 6)).astype(np.float32)
        w1 = np.concatenate([w1, mix @ w1])
        h = b.op("Gemm", [x, b.const(w1)], transB=1, name="first")
        y = b.gemm(h, 8, 5, name="second")
    else:
        x = b.input("x", ["batch", 3, 8, 8])
        w1 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
        w1 = np.concatenate([w1, np.einsum("ij,jabc->iabc", mix, w1)])
        h = b.op("Conv", [x, b.const(w1)], kernel_shape=[3, 3], pads=[1] * 4, name="first")
        if kind == "conv":
            y = b.conv(h, 8, 5, name="second")
        else:
            y = b.conv_transpose(h, 8, 5, name="second")
    return b.build([y])


def _calib(model, n=64):
    shape = [d.dim_value or n for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}


def _error(model, pruned, calib):
    want = session(model).run(None, calib)[0]
    got = session(pruned).run(None, calib)[0]
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("kind", ["gemm", "conv", "convtranspose"])
def test_removed_linear_mixes_are_restored_exactly(kind):
    model = _redundant(kind)
    calib = _calib(model)
    # in the channels' own basis (rotated, the plain cut is already exact: test_rotate.py)
    kw = {"ratio": "*=0.5", "calib": calib, "rotate": "off"}
    plain = prune(model, **kw)
    fixed = prune(model, compensate=True, ridge=0.0, **kw)
    assert _error(model, plain.model, calib) > 0.01
    assert _error(model, fixed.model, calib) < 1e-3
    fit = fixed.recovery["compensate"]
    assert [f["layer"] for f in fit] == ["second"] and fit[0]["error_after"] < 1e-4
    shapes = lambda m: sorted(tuple(i.dims) for i in m.graph.initializer)  # noqa: E731
    assert shapes(plain.model) == shapes(fixed.model)  # the structure is the same
    assert fixed.verification.passed


def test_bias_absorbs_constant_channels():
    b = GraphBuilder(seed=3)
    x = b.input("x", ["batch", 6])
    bias = np.zeros(8, np.float32)
    bias[4:] = 50.0  # four channels are (almost) constant after the ReLU
    w1 = np.random.default_rng(3).standard_normal((8, 6)).astype(np.float32)
    w1[4:] *= 1e-4
    h = b.relu(b.op("Gemm", [x, b.const(w1), b.const(bias)], transB=1, name="first"))
    model = b.build([b.gemm(h, 8, 3, name="second")])
    calib = _calib(model)
    order = prune(model, ratio="*=0.5", calib=calib, criterion="l2")
    fixed = prune(model, ratio="*=0.5", calib=calib, compensate=True,
                  ridge=0.0)
    assert _error(model, fixed.model, calib) < 1e-4 < _error(model, order.model, calib)


def test_compensation_needs_calibration():
    with pytest.raises(UsageError, match="calibration"):
        prune(_redundant("gemm"), ratio=0.5, compensate=True)


def test_cli_compensate(tmp_path, capsys):
    import json

    from onnxprune.cli.main import main

    path, npz = tmp_path / "m.onnx", tmp_path / "c.npz"
    model = _redundant("conv")
    onnx.save(model, str(path))
    np.savez(npz, **_calib(model))
    assert main(["prune", str(path), "-o", str(tmp_path / "o.onnx"), "--calib", str(npz),
                 "--compensate", "--metric", "cosine", "--rotate", "off", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["recovery"]["compensate"] and data["quality"]["after_recovery"] > \
        data["quality"]["after"]


def _solve(p, y, ridge, intercept):
    """The ridge least squares by its definition: argmin ||[p 1] w - y||^2 + ridge *
    mean(diag(p^T p)) * ||w_p||^2."""
    a = np.concatenate([p, np.ones((len(p), 1), p.dtype)], axis=1) if intercept else p
    a = a.astype(np.float64)
    d = p.shape[1]
    reg = ridge * np.trace(a[:, :d].T @ a[:, :d]) / d
    penalty = np.zeros(a.shape[1])
    penalty[:d] = reg
    return np.linalg.solve(a.T @ a + np.diag(penalty), a.T @ y.astype(np.float64))


def _rel_error(p, w, y, intercept):
    pred = p.astype(np.float64) @ w[: p.shape[1]] + (w[-1] if intercept else 0.0)
    return float(np.linalg.norm(pred - y) / np.linalg.norm(y))


def test_normal_equations_in_chunks_solve_as_all_rows_at_once():
    from onnxprune.recover.normal_equations import NormalEquations

    rng = np.random.default_rng(0)
    p = rng.standard_normal((300, 7)).astype(np.float32)
    y = (p @ rng.standard_normal((7, 3)) + 0.1 * rng.standard_normal((300, 3))).astype(np.float32)
    for intercept in (True, False):
        eq = NormalEquations(intercept)
        for lo in range(0, 300, 70):  # uneven chunks
            eq.add(p[lo:lo + 70], y[lo:lo + 70])
        want = _solve(p, y, 1e-3, intercept)
        assert eq.rows == 300
        assert np.allclose(eq.solve(1e-3), want, rtol=1e-9, atol=1e-10)
        w = rng.standard_normal(want.shape)
        # the same norm from sums: w^T G w - 2 w^T B + |Y|^2 cancels in float64 (~1e-8 here)
        assert abs(eq.rel_error(w) - _rel_error(p, w, y, intercept)) < 1e-6


@pytest.mark.parametrize("kind", ["gemm", "conv"])
def test_compensation_in_sample_chunks_refits_as_on_all_samples(kind, monkeypatch):
    """Under a memory cap compensation reads the samples a chunk at a time: with every row
    kept, the refit is the one all samples give together."""
    from onnxprune.recover import compensate as comp

    model = _redundant(kind)
    calib = _calib(model, n=48)
    whole = prune(model, ratio="*=0.5", calib=calib, compensate=True, holdout=0)
    monkeypatch.setattr(comp, "fitting_samples", lambda *a, **k: 10)  # 5 chunks of <= 10
    chunked = prune(model, ratio="*=0.5", calib=calib, compensate=True, holdout=0)
    a, b = whole.recovery["compensate"], chunked.recovery["compensate"]
    assert [f["rows"] for f in a] == [f["rows"] for f in b]  # every row, in either case
    assert abs(a[0]["error_after"] - b[0]["error_after"]) < 1e-6
    assert _error(whole.model, chunked.model, calib) < 1e-4
