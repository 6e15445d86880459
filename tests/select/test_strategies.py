"""Importance criteria and selection strategies, asserted by their effect."""

import re

import numpy as np
import pytest
from conftest import group_of_tensor, group_with_layer

from onnxprune.api import analyze, prune
from onnxprune.errors import UsageError
from onnxprune.ir.graph import import_model
from onnxprune.pipeline import Calibrate, Context, Normalize, Pipeline, UseModel
from onnxprune.scoring import score_units
from onnxprune.testing import normalized
from onnxprune.zoo.builder import GraphBuilder

N_SIGNAL, N_WIDE, N_NARROW = 16, 64, 8


def fragile(seed: int = 0):
    """x -> fc1 (64: 16 carry the signal, 48 barely) -> fc2 (8: every one matters) -> fc3."""
    b = GraphBuilder(seed=seed)
    rng = np.random.default_rng(seed)
    x = b.input("x", ["batch", 16])
    w1 = rng.standard_normal((N_WIDE, 16)).astype(np.float32) / 4
    w1[N_SIGNAL:] *= 1e-3
    w2 = rng.standard_normal((N_NARROW, N_WIDE)).astype(np.float32) / 4
    w2[:, N_SIGNAL:] *= 1e-3
    h = b.relu(b.op("Gemm", [x, b.const(w1), b.const(np.full(N_WIDE, 0.1, np.float32))],
                    transB=1, name="wide"))
    h = b.relu(b.op("Gemm", [h, b.const(w2), b.const(np.full(N_NARROW, 0.1, np.float32))],
                    transB=1, name="narrow"))
    y = b.gemm(h, N_NARROW, 16, name="out")
    return b.build([y], "fragile")


CALIB = {"x": np.random.default_rng(7).standard_normal((64, 16)).astype(np.float32)}


def _run(**kw):
    kw.setdefault("calib", CALIB)
    kw.setdefault("metric", "cosine")
    return prune(fragile(), **kw)


def _reduction(r):
    return 1 - r.params_after / r.params_before


def test_uniform_ratio_hurts_the_fragile_group():
    r = _run(ratio=0.5)
    assert r.plan.widths[group_of_tensor(r.analysis, "narrow_out0").id] == (N_NARROW, 4)
    assert r.quality["after"] < 0.95


@pytest.mark.parametrize("strategy,method", [("sensitivity", None), ("soft", "gradient"),
                                             ("soft", "grid")])
def test_application_aware_strategies_beat_uniform(strategy, method):
    uniform = _run(ratio=0.5)
    target = _reduction(uniform)
    kw = {"soft_method": method} if method else {}
    r = _run(strategy=strategy, target_params=target, **kw)
    assert _reduction(r) >= target - 0.02
    assert r.quality["after"] > uniform.quality["after"] + 0.05
    assert r.quality["after"] > 0.98  # the narrow group is left (nearly) whole
    assert r.verification.passed


def test_a_shortlisted_measured_path_keeps_the_fragile_group(monkeypatch):
    """Too many steps to measure every group at every step: only the groups whose own curves
    promise the cheapest next level are measured on the combined mask; still on target and
    the narrow group still whole, with fewer evaluations."""
    from onnxprune.select import sensitivity

    uniform = _run(ratio=0.5)
    target = _reduction(uniform)
    full = _run(strategy="sensitivity", target_params=target)
    original = sensitivity.select_sensitivity

    def bounded(*args, **kw):
        return original(*args, **{**kw, "max_evals": 4})
    monkeypatch.setattr("onnxprune.pipeline.passes.pruning.select_sensitivity", bounded)
    calls = []
    real = sensitivity.measured_path

    def measured(space, ev, curves, unit_cost, target, shortlist=None, share=0.0):
        calls.append(shortlist)
        return real(space, ev, curves, unit_cost, target, shortlist, share)
    monkeypatch.setattr(sensitivity, "measured_path", measured)
    r = _run(strategy="sensitivity", target_params=target)
    assert calls and calls[0] == 2  # the shortlist: 2 groups per step
    assert _reduction(r) >= target - 0.02 and r.quality["after"] > 0.98
    assert r.quality["after"] == pytest.approx(full.quality["after"], abs=0.02)


@pytest.mark.parametrize("strategy", ["uniform", "global", "sensitivity", "soft"])
@pytest.mark.parametrize("kind", ["params", "macs"])
def test_targets_are_met(strategy, kind):
    r = _run(strategy=strategy, **{f"target_{kind}": 0.55})
    got = r.selection[f"{kind}_reduction"]
    assert 0.55 <= got + 0.02 and got <= 0.55 + 0.08, got
    if kind == "params":
        assert abs(got - _reduction(r)) < 1e-9  # the cost model predicts the real model


def test_constraint_finds_the_largest_cut_that_keeps_the_metric():
    tight = _run(strategy="sensitivity", constraint="cosine>=0.995")
    loose = _run(strategy="sensitivity", constraint="cosine>=0.9")
    assert tight.quality["after"] >= 0.995 and loose.quality["after"] >= 0.9
    assert tight.selection["satisfied"] and loose.selection["satisfied"]
    assert _reduction(tight) > 0.5  # the 48 idle channels go without a trace
    assert _reduction(loose) > _reduction(tight)


def test_constraint_on_another_metric_than_the_objective():
    r = _run(strategy="sensitivity", constraint="kl<=0.001", metric="cosine")
    assert r.selection["satisfied"] and _reduction(r) > 0.3


@pytest.mark.parametrize("strategy", ["global", "sensitivity", "soft"])
def test_round_to_and_min_width(strategy):
    r = _run(strategy=strategy, target_params=0.5, round_to=4, min_width=4)
    for gid, (before, after) in r.plan.widths.items():
        assert after == before or (after % 4 == 0 and after >= 4), (gid, before, after)


def test_component_budget_caps_other_strategies():
    import sys

    sys.path.insert(0, "tests")
    from test_components import agent

    calib = {"obs": np.random.default_rng(0).standard_normal((32, 6)).astype(np.float32),
             "action": np.random.default_rng(1).standard_normal((32, 2)).astype(np.float32)}
    r = prune(agent(), strategy="global", ratio="pi=0", target_params=0.3, components="auto",
              calib=calib)
    for g in r.analysis.groups:
        if g.component == "pi":
            assert r.plan.widths[g.id][0] == r.plan.widths[g.id][1]
    assert _reduction(r) >= 0.28


def _scores(criterion, model=None, calib=CALIB):
    ctx = Context()
    Pipeline([UseModel(model or fragile()), Normalize()])(ctx)
    from onnxprune.analysis.channels import analyze_channels
    from onnxprune.ir.graph import export_model
    from onnxprune.search.evaluate import Evaluator
    from onnxprune.search.quality import get_metric

    ctx.analysis = analyze_channels(ctx.graph)
    ref = export_model(ctx.graph)
    ev = Evaluator(ref, ctx.analysis, calib, get_metric("cosine"))
    return ctx, score_units(criterion, ctx.graph, ctx.analysis, evaluator=ev, reference=ref,
                            calib=calib, bn_scales=ctx.bn_scales)


@pytest.mark.parametrize("criterion", ["l1", "l2", "lamp", "activation", "taylor", "metric"])
def test_criteria_find_the_idle_channels(criterion):
    ctx, scores = _scores(criterion)
    wide = group_with_layer(ctx.analysis, "wide")
    lowest = wide.units[np.argsort(scores[wide.units], kind="stable")[: N_WIDE - N_SIGNAL]]
    assert set(lowest) == set(wide.units[N_SIGNAL:])


def test_apoz_ranks_dead_channels_last():
    b = GraphBuilder(seed=3)
    x = b.input("x", ["batch", 8])
    bias = np.zeros(12, np.float32)
    bias[:4] = -100.0  # four channels never fire after the ReLU
    h = b.relu(b.op("Gemm", [x, b.weight(12, 8), b.const(bias)], transB=1, name="fc"))
    model = b.build([b.gemm(h, 12, 3)])
    calib = {"x": np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)}
    ctx, scores = _scores("apoz", model, calib)
    g = group_with_layer(ctx.analysis, "fc")
    assert np.all(scores[g.units[:4]] == 0) and np.all(scores[g.units[4:]] > 0)


def test_bn_criterion_uses_the_folded_scale():
    b = GraphBuilder(seed=4)
    x = b.input("x", ["batch", 3, 8, 8])
    h = b.conv(x, 3, 8, name="c1")
    gamma = np.linspace(1.0, 2.0, 8).astype(np.float32)
    gamma[[2, 5]] = 1e-4
    h = b.op("BatchNormalization", [h, b.const(gamma), b.const(np.zeros(8, np.float32)),
                                    b.const(np.zeros(8, np.float32)),
                                    b.const(np.ones(8, np.float32))], name="bn")
    model = b.build([b.conv(b.relu(h), 8, 2)])
    ctx, scores = _scores("bn", model, {"x": np.zeros((2, 3, 8, 8), np.float32)})
    assert ctx.bn_scales  # the fold recorded gamma
    g = group_with_layer(ctx.analysis, "c1")
    assert set(g.units[np.argsort(scores[g.units])[:2]]) == {g.units[2], g.units[5]}


def test_fpgm_marks_the_filter_nearest_the_median():
    b = GraphBuilder(seed=5)
    x = b.input("x", ["batch", 6])
    rng = np.random.default_rng(5)
    w = rng.standard_normal((10, 6)).astype(np.float32)
    w[3] = np.median(w, axis=0)  # the most replaceable filter
    h = b.relu(b.op("Gemm", [x, b.const(w)], transB=1, name="fc"))
    model = b.build([b.gemm(h, 10, 2)])
    ctx, scores = _scores("fpgm", model, {"x": np.zeros((2, 6), np.float32)})
    g = group_with_layer(ctx.analysis, "fc")
    assert np.argmin(scores[g.units]) == 3


def test_data_criteria_need_calibration():
    with pytest.raises(UsageError, match="calibration"):
        prune(fragile(), criterion="taylor")
    with pytest.raises(UsageError, match="calibration"):
        prune(fragile(), strategy="sensitivity", target_params=0.5)
    with pytest.raises(UsageError, match="sensitivity"):
        prune(fragile(), strategy="soft", constraint="cosine>=0.9", calib=CALIB)


def test_random_calibration_and_file(tmp_path):
    ctx = Context()
    Pipeline([UseModel(fragile()), Normalize(), Calibrate(random=5)])(ctx)
    assert ctx.calib["x"].shape == (5, 16)
    path = tmp_path / "c.npz"
    np.savez(path, x=np.zeros((3, 16), np.float32))
    r = prune(fragile(), calib=str(path), strategy="global", target_params=0.5)
    assert r.quality["samples"] == 3
    np.savez(path, x=np.zeros((3, 15), np.float32))
    with pytest.raises(UsageError, match="shape"):
        prune(fragile(), calib=str(path), strategy="global", target_params=0.5)


def test_analysis_is_untouched_by_the_strategy():
    a = analyze(fragile())
    assert [g.channels for g in a.channels.groups] == [N_WIDE, N_NARROW, 16]
    assert normalized(fragile()).graph.node and import_model(normalized(fragile())).nodes


def test_the_sensitivity_progress_total_is_an_estimate_of_its_steps(monkeypatch):
    """The total is estimated where the greedy prefix ends (from its share of the target),
    not every level of every group (an ETA of minutes that ended in seconds)."""
    import contextlib

    from onnxprune.select import sensitivity

    seen = {}

    @contextlib.contextmanager
    def task(description, total):
        seen[description] = {"total": total, "done": 0, "totals": [], "status": []}

        def advance(n=1, status=None, total=None):
            seen[description]["done"] += n
            if total is not None:
                seen[description]["totals"].append(total)
            if status is not None:
                seen[description]["status"].append((seen[description]["done"], status))
        yield advance
    monkeypatch.setattr(sensitivity, "task", task)
    r = _run(strategy="sensitivity", target_params=0.3)
    row = seen["sensitivity"]
    levels = sum(len(c["fractions"]) for c in r.selection["curves"])  # measured points
    assert len(row["totals"]) == 1 and row["done"] > 0
    assert abs(row["totals"][0] - row["done"]) <= max(2, row["done"] // 2), row
    assert r.selection["curve_points"] == levels - len(r.selection["curves"])  # + the bases
    # the first batch (every group's first level) is named while it runs, says how far it
    # has gone with the time it has left after each of its parts, then is cleared
    groups = len(r.selection["curves"])
    size = -(-groups // sensitivity.CHUNKS)  # points a part
    end = [text for _, text in row["status"]].index("")
    first, parts = row["status"][0], [text for _, text in row["status"][1:end]]
    assert first == (0, f"measuring {groups} curve points"), row
    done = [int(re.fullmatch(rf"curve points (\d+)/{groups}, ETA \d:\d\d:\d\d", t)[1])
            for t in parts]
    assert done == list(range(size, groups, size)) and done, row


def deceptive(seed: int = 0):
    """x -> fc1 (64: 16 small weights carry the signal; 48 large weights a negative bias keeps
    below zero: dead after the ReLU) -> fc2: weight magnitude ranks the dead channels first."""
    b = GraphBuilder(seed=seed)
    rng = np.random.default_rng(seed)
    x = b.input("x", ["batch", 16])
    w1 = rng.standard_normal((N_WIDE, 16)).astype(np.float32) / 4
    w1[N_SIGNAL:] *= 8
    bias = np.full(N_WIDE, 0.1, np.float32)
    bias[N_SIGNAL:] = -100.0
    h = b.relu(b.op("Gemm", [x, b.const(w1), b.const(bias)], transB=1, name="wide"))
    y = b.gemm(h, N_WIDE, 16, name="out")
    return b.build([y], "deceptive")


def test_soft_ranks_by_each_criterion_and_keeps_the_best_by_the_metric():
    model = deceptive()
    kw = dict(calib=CALIB, metric="cosine", strategy="soft", target_params=0.3)
    auto, l2 = prune(model, **kw), prune(model, criterion="l2", **kw)
    sel = auto.selection
    assert set(sel["criteria"]) == {"l2", "activation", "reconstruction"}
    # the dead channels' large weights mislead l2; the metric sees it and picks another
    assert sel["criterion"] != "l2"
    assert sel["criteria"][sel["criterion"]] == max(sel["criteria"].values())
    assert sel["criteria"]["l2"] < sel["criteria"][sel["criterion"]] - 0.05
    assert auto.quality["after"] > l2.quality["after"] + 0.05 and auto.verification.passed
    # a criterion given is the one used
    assert l2.selection["criterion"] == "l2" and "criteria" not in l2.selection
