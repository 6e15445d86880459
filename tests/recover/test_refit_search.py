"""Sensitivity measured after compensation: candidates scored as the refit leaves them."""

import json

import numpy as np
import onnx
import pytest

from onnxprune.analysis.channels import analyze_channels
from onnxprune.api import prune
from onnxprune.ir.graph import export_model, import_model
from onnxprune.ir.runtime import session
from onnxprune.recover.compensate import compensate
from onnxprune.recover.refit import RefitEvaluator, refit
from onnxprune.rewrite.remove import remove_units
from onnxprune.search.evaluate import Evaluator
from onnxprune.search.quality import get_metric
from onnxprune.testing import normalized
from onnxprune.zoo.builder import GraphBuilder


def _chain(kind: str):
    b = GraphBuilder(seed=4)
    if kind == "conv":
        x = b.input("x", ["batch", 3, 8, 8])
        h = b.relu(b.conv(x, 3, 8, name="first"))
        h = b.relu(b.conv(h, 8, 6, name="second"))
        y = b.conv(h, 6, 4, name="third")
        return b.build([y]), (24, 3, 8, 8)
    x = b.input("x", ["batch", 6])
    h = b.relu(b.gemm(x, 6, 8, name="first"))
    h = b.relu(b.gemm(h, 8, 7, name="second"))
    return b.build([b.gemm(h, 7, 3, name="third")]), (64, 6)


@pytest.mark.parametrize("kind", ["conv", "gemm"])
def test_a_candidate_is_measured_as_compensation_leaves_it(kind):
    """One group cut: the refit evaluator's outputs are the physically pruned, compensated
    model's (same rows, same ridge; float32 models, float64 solves)."""
    model, shape = _chain(kind)
    ref = normalized(model)
    analysis = analyze_channels(import_model(ref))
    calib = {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    ev = Evaluator(ref, analysis, calib, get_metric("cosine"))
    rev = RefitEvaluator(ev, import_model(ref), ref, analysis, calib)
    assert rev.summary()["layers"] == 2 and rev.skipped == 0  # second and third
    groups = [g for g in analysis.groups if not analysis.unit_frozen[g.units].any()]
    assert len(groups) == 2
    for group in groups:
        removed = np.zeros(analysis.num_units, bool)
        removed[group.units[[0, 2, 3]]] = True
        graph = import_model(ref)
        remove_units(graph, analysis, removed)
        fits = compensate(graph, ref, analysis, removed, calib)
        assert len(fits) == 1 and fits[0].error_after < fits[0].error_before
        want = session(export_model(graph)).run(None, calib)[0]
        got = rev.outputs(~removed)[0]
        plain = ev.outputs(~removed)[0]
        scale = np.abs(want).max()
        assert np.abs(got - want).max() / scale < 1e-5
        assert np.abs(plain - want).max() / scale > 1e-3  # the refit changed something
        assert rev.evaluate(~removed) > ev.evaluate(~removed)


def test_refit_is_least_squares_on_the_kept_rows():
    rng = np.random.default_rng(2)
    a = np.concatenate([rng.standard_normal((200, 5)), np.ones((200, 1))], axis=1)
    theta0 = rng.standard_normal((6, 3))
    keep = np.array([True, False, True, True, False])
    got = refit(a.T @ a, theta0, keep, ridge=0.0)
    cols = np.append(keep, True)
    want = np.linalg.lstsq(a[:, cols], a @ theta0, rcond=None)[0]
    assert np.allclose(got[cols], want, atol=1e-9) and not got[~cols].any()


def _refit_reference(gram, theta0, keep, ridge):
    """The refit written out plainly: ridge on the kept data rows, a general solve, and the
    output errors of both candidates as full quadratic forms."""
    keep = np.append(keep, True)
    k = np.flatnonzero(keep)
    g = gram[np.ix_(k, k)].copy()
    data = k[:-1]
    g[np.arange(len(data)), np.arange(len(data))] += ridge * np.trace(
        gram[np.ix_(data, data)]) / len(data)
    theta = np.zeros_like(theta0)
    theta[k] = np.linalg.solve(g, gram[k] @ theta0)
    plain = theta0 * keep[:, None]

    def error(t):
        return np.einsum("io,ij,jo->", t - theta0, gram, t - theta0)

    return theta if error(theta) < error(plain) else plain


@pytest.mark.parametrize("ridge", [0.0, 1e-3, 50.0])
def test_refit_equals_the_plain_formulation(ridge):
    """Cholesky and the error on the removed rows alone give what the written-out refit does,
    the plain cut included (a huge ridge shrinks the refit below the plain cut)."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((300, 9))
    a[:, 4] = a[:, 1] * 0.9 + 0.1 * a[:, 4]  # a column the others can stand in for
    a = np.concatenate([a, np.ones((300, 1))], axis=1)
    gram = a.T @ a
    theta0 = rng.standard_normal((10, 4))
    chose_plain = 0
    for trial in range(12):
        keep = rng.random(9) < 0.6
        keep[trial % 9] = True
        got = refit(gram, theta0, keep, ridge=ridge)
        want = _refit_reference(gram, theta0, keep, ridge)
        assert np.allclose(got, want, rtol=1e-9, atol=1e-9)
        chose_plain += np.array_equal(got, theta0 * np.append(keep, True)[:, None])
    assert (chose_plain > 0) == (ridge == 50.0)


def _two_branches():
    """Branch A: 8 channels of which 4 are large linear mixes of the other 4 (a refit restores
    them exactly, cutting them without one costs much); branch B: 8 independent channels of
    small weight after a ReLU (cheap to cut as they are, not restorable)."""
    b = GraphBuilder(seed=5)
    rng = np.random.default_rng(5)
    x = b.input("x", ["batch", 6])
    w = rng.standard_normal((4, 6)).astype(np.float32)
    w_a = np.concatenate([w, 3.0 * rng.standard_normal((4, 4)).astype(np.float32) @ w])
    a = b.op("Gemm", [x, b.const(w_a)], transB=1, name="a_in")
    ya = b.gemm(a, 8, 5, name="a_out")
    w_b = 0.3 * rng.standard_normal((8, 6)).astype(np.float32)
    hb = b.relu(b.op("Gemm", [x, b.const(w_b)], transB=1, name="b_in"))
    yb = b.gemm(hb, 8, 5, name="b_out")
    return b.build([b.op("Add", [ya, yb])])


def test_the_search_cuts_what_compensation_repairs():
    model = _two_branches()
    calib = {"x": np.random.default_rng(1).standard_normal((200, 6)).astype(np.float32)}
    kw = {"strategy": "sensitivity", "target_params": 0.2, "calib": calib, "holdout": 0,
          "compensate": True, "ridge": 0.0, "rotate": "off"}  # the channels as they are
    plain = prune(model, search_refit="off", **kw)
    aware = prune(model, **kw)  # auto: the run compensates
    assert "refit" not in plain.selection and aware.selection["refit"]["layers"] == 2

    def cut(res, layer):
        group = next(g for g in res.analysis.groups if layer in g.layers)
        return int(res.plan.removed[group.units].sum())

    assert cut(plain, "b_in") > 0 and cut(aware, "a_in") >= 4 and cut(aware, "b_in") == 0
    ref = session(model).run(None, calib)[0]
    err = {k: float(np.abs(session(r.model).run(None, calib)[0] - ref).max())
           for k, r in (("plain", plain), ("aware", aware))}
    assert err["aware"] < 1e-3 < err["plain"]


def test_refit_search_options():
    model, _ = _chain("gemm")
    calib = {"x": np.random.default_rng(0).standard_normal((32, 6)).astype(np.float32)}
    with pytest.warns(UserWarning, match="this run does not compensate"):
        res = prune(model, strategy="sensitivity", target_params=0.2, calib=calib,
                    search_refit="on")  # no compensation: measured after a refit, said so
    assert res.selection["refit"]["layers"] == 2
    with pytest.raises(Exception, match="select.refit: works with strategy sensitivity"):
        prune(model, ratio=0.3, calib=calib, search_refit="on")


def test_the_cli_says_the_search_refit(tmp_path, capsys):
    from onnxprune.cli.main import main

    src, out, data = tmp_path / "m.onnx", tmp_path / "o.onnx", tmp_path / "c.npz"
    onnx.save(_two_branches(), src)
    np.savez(data, x=np.random.default_rng(1).standard_normal((60, 6)).astype(np.float32))
    args = ["prune", str(src), "-o", str(out), "--calib", str(data), "--strategy",
            "sensitivity", "--target-params", "0.2", "--compensate", "-q"]
    assert main(args) == 0
    assert "sensitivity measured after the refit compensation makes: 2 layers" in \
        capsys.readouterr().out
    assert main([*args, "--search-refit", "off", "--json"]) == 0
    assert "refit" not in json.loads(capsys.readouterr().out)["selection"]
