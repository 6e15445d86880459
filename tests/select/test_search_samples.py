"""``search_samples``: the sensitivity search measures a seeded draw of the calibration
samples; scoring, compensation and the reports keep every sample."""

import json
import warnings

import numpy as np
import onnx
import pytest

from onnxprune.api import prune
from onnxprune.cli.main import main as cli_main
from onnxprune.errors import UsageError
from onnxprune.testing import normalized
from onnxprune.zoo.builder import GraphBuilder

N = 64


def two_branches():
    """x[:, :8] -> a (8, ReLU) and x[:, 8:] -> b (8, ReLU), added: a sample that reads zero on
    one half leaves its branch's channels at zero, free to cut."""
    b = GraphBuilder(seed=3)
    rng = np.random.default_rng(3)
    x = b.input("x", ["batch", 16])
    outs = []
    for name, cols in (("a", slice(0, 8)), ("b", slice(8, 16))):
        w = np.zeros((8, 16), np.float32)
        w[:, cols] = rng.standard_normal((8, 8)) / 3
        h = b.relu(b.op("Gemm", [x, b.const(w), b.const(np.zeros(8, np.float32))], transB=1,
                        name=name))
        outs.append(b.gemm(h, 8, 4, name=f"{name}_out"))
    return normalized(b.build([b.op("Add", outs)], "two_branches"))


def _draw(k: int) -> np.ndarray:
    """The samples the search measures (``data.sampled``: seed 0, in their order)."""
    return np.sort(np.random.default_rng(0).choice(N, size=k, replace=False))


DRAWN = _draw(16)


def _samples(seed: int) -> np.ndarray:
    """64 samples, each with one half at zero: the 16 the search draws read branch a, the
    others branch b."""
    x = np.random.default_rng(seed).standard_normal((N, 16)).astype(np.float32)
    a = np.isin(np.arange(N), DRAWN)
    x[a, 8:] = 0
    x[~a, :8] = 0
    return x


CALIB = {"x": _samples(11)}
# the search alone decides: channels ranked by weight (no data), no held-out share
COMMON = {"metric": "cosine", "strategy": "sensitivity", "target_params": 0.3,
          "criterion": "l2", "holdout": 0}


def _prune(calib, path=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prune(two_branches(), path, calib=calib, **COMMON, **kw)


def _bytes(path) -> bytes:
    return onnx.load(path).SerializeToString()


def test_the_search_measures_the_draw():
    """The cut searched on all 64 samples with search_samples=16 is the cut searched on
    exactly the 16 drawn ones (branch a's), not the one the others (branch b's) or all 64
    give."""
    sampled = _prune(CALIB, search_samples=16)
    assert sampled.selection["search_samples"] == 16
    drawn = _prune({"x": CALIB["x"][DRAWN]})
    assert np.array_equal(sampled.plan.removed, drawn.plan.removed)
    others = _prune({"x": np.delete(CALIB["x"], DRAWN, axis=0)}).plan.removed
    every = _prune(CALIB).plan.removed
    assert not np.array_equal(sampled.plan.removed, others)
    assert not np.array_equal(sampled.plan.removed, every)


def test_compensation_and_quality_use_every_sample():
    r = _prune(CALIB, search_samples=16, compensate=True)
    assert r.selection["search_samples"] == 16
    fits = r.recovery["compensate"]
    assert fits and all(f["rows"] == N for f in fits)  # a Gemm: one row per sample, all 64
    full = _prune(CALIB, compensate=True)
    assert full.selection["search_samples"] == N


def test_a_draw_as_large_as_the_data_changes_nothing(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    _prune(CALIB, a, compensate=True)
    r = _prune(CALIB, b, compensate=True, search_samples=N)
    assert r.selection["search_samples"] == N
    assert _bytes(a) == _bytes(b)


def test_only_with_the_sensitivity_strategy():
    with pytest.raises(UsageError, match="samples.*strategy sensitivity"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prune(two_branches(), None, calib=CALIB, strategy="soft",
                  target_params=0.3, search_samples=16)


def test_cli_set_and_bad_values(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(two_branches(), model)
    calib = tmp_path / "c.npz"
    np.savez(calib, **CALIB)
    out = tmp_path / "p.onnx"
    base = ["prune", str(model), "-o", str(out), "--calib", str(calib), "--strategy",
            "sensitivity", "--target", "params=0.3", "--json", "-q"]
    assert cli_main([*base, "--set", "select.samples=16"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["selection"]["search_samples"] == 16
    assert out.is_file()
    out.unlink()
    for bad in ("0", "1.5", "many"):
        code = cli_main([*base, "--set", f"select.samples={bad}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "samples" in err[0]
        assert not out.exists()
