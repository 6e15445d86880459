"""Candidate evaluation on a process pool or Ray gives the same answers as locally."""

import numpy as np
import pytest

from onnxprune.analysis.channels import analyze_channels
from onnxprune.api import prune
from onnxprune.errors import UsageError
from onnxprune.ir.graph import import_model
from onnxprune.search import evaluate, executors
from onnxprune.search.evaluate import Evaluator
from onnxprune.search.executors import make_pool
from onnxprune.search.quality import get_metric
from onnxprune.testing import normalized
from onnxprune.zoo.builder import demo_cnn


def _evaluator():
    ref = normalized(demo_cnn())
    analysis = analyze_channels(import_model(ref))
    calib = {"image": np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)}
    return Evaluator(ref, analysis, calib, get_metric("cosine")), analysis


def _masks(analysis, n=6):
    return (np.random.default_rng(3).random((n, analysis.num_units)) > 0.3).astype(np.float32)


def _on_pool(ev, kind, masks):
    """The masks' scores from a pool of two workers (then closed)."""
    ev.attach(make_pool(kind, ev, workers=2))
    try:
        return ev.evaluate_many(masks)
    finally:
        ev.close()


@pytest.mark.parametrize("kind", ["process", "ray"])
def test_pools_match_local(kind):
    if kind == "ray":
        pytest.importorskip("ray")
    ev, analysis = _evaluator()
    masks = _masks(analysis)
    local = ev.evaluate_many(masks)
    remote = _on_pool(ev, kind, masks)
    assert np.array_equal(local, remote)
    assert ev.evals == 2 * len(masks)


@pytest.mark.parametrize("kind", ["process", "ray"])
def test_pools_match_local_from_kept_prefixes(kind, monkeypatch):
    """Curve points, enough for each worker to run them from kept prefixes as this process
    does (a process pool's workers, forked, see this small net as worth it; Ray's run them K
    at a time), at one thread where this process runs at its own count: the same bits."""
    if kind == "ray":
        pytest.importorskip("ray")
    monkeypatch.setattr(evaluate, "PREFIX_MACS", 0)
    ev, analysis = _evaluator()
    masks = []
    for g in analysis.groups * 4:
        keep = np.ones(analysis.num_units, np.float32)
        keep[g.units[: max(1, g.units.size // 2)]] = 0.0
        masks.append(keep)
    masks = np.array(masks[:24])
    local = ev.evaluate_many(masks)
    assert ev.prefixes and ev.prefixes.stats["suffix"] > 0
    worker = executors._build(executors._payload(ev))  # as a worker builds it: one thread
    assert np.array_equal(worker.evaluate_local(masks[:12]), local[:12])
    assert worker.prefixes and worker.prefixes.stats["suffix"] > 0
    remote = _on_pool(ev, kind, masks)
    assert np.array_equal(local, remote)


@pytest.mark.parametrize("kind", ["process", "ray"])
def test_search_is_identical_on_a_pool(kind):
    """The whole sensitivity search, its candidates scored on a process pool or on a real
    local Ray instance (the dev extra installs ray): the same cut as in this process."""
    if kind == "ray":
        pytest.importorskip("ray")
    calib = {"image": np.random.default_rng(1).standard_normal((8, 3, 32, 32)).astype(np.float32)}
    runs = [prune(demo_cnn(), strategy="sensitivity", target_params=0.5, calib=calib,
                  executor=k, workers=2) for k in ("local", kind)]
    assert np.array_equal(runs[0].plan.removed, runs[1].plan.removed)
    assert runs[0].quality == runs[1].quality
    # a draw of the samples (search_samples) is scored on the pool too
    drawn = prune(demo_cnn(), strategy="sensitivity", target_params=0.5, calib=calib,
                  executor=kind, workers=2, search_samples=3, holdout=0)
    local = prune(demo_cnn(), strategy="sensitivity", target_params=0.5, calib=calib,
                  search_samples=3, holdout=0)
    assert drawn.selection["search_samples"] == 3
    assert np.array_equal(drawn.plan.removed, local.plan.removed)


def test_unknown_executor():
    ev, _ = _evaluator()
    with pytest.raises(UsageError, match="executor"):
        make_pool("cluster", ev)
