"""Outputs with their samples second (a recognizer's ``[time, batch, classes]``): run in
chunks, in candidate batches and from kept prefixes, they are joined and split along that
axis, as the whole run gives them (joined along the first, they were other samples' time
steps, or a shape error where the last chunk was smaller)."""

import numpy as np

from onnxprune.analysis.channels import analyze_channels
from onnxprune.ir.graph import import_model
from onnxprune.ir.runtime import output_axes, run_batched, session
from onnxprune.recover.refit import RefitEvaluator
from onnxprune.search import prefix
from onnxprune.search.evaluate import Evaluator
from onnxprune.search.quality import get_metric
from onnxprune.testing import normalized
from onnxprune.zoo.builder import GraphBuilder

N, T = 10, 6


def _recognizer():
    b = GraphBuilder(seed=5)
    x = b.input("x", ["batch", T, 16])
    h = b.relu(b.matmul(x, 16, 32, name="up"))
    h = b.relu(b.matmul(h, 32, 24, name="mid"))
    logits = b.matmul(h, 24, 8, name="head")
    return b.build([(b.op("Transpose", [logits], perm=[1, 0, 2]), [T, "batch", 8])])


def _data():
    return {"x": np.random.default_rng(0).standard_normal((N, T, 16)).astype(np.float32)}


def test_chunks_join_along_each_outputs_sample_axis():
    model = _recognizer()
    sess = session(model)
    assert output_axes(sess) == output_axes(model) == [1]
    whole = sess.run(None, _data())[0]
    assert whole.shape == (T, N, 8)
    for rows in (3, 4, 7):  # uneven last chunks
        got = run_batched(sess, _data(), max_rows=rows)[0]
        np.testing.assert_allclose(got, whole, rtol=1e-6, atol=1e-6)


def _masks(analysis, count=6):
    rng = np.random.default_rng(1)
    keep = np.ones((count, analysis.num_units), np.float32)
    for row in keep:
        row[rng.choice(analysis.num_units, analysis.num_units // 3, replace=False)] = 0.0
    return keep


def test_candidates_in_batches_and_chunks_score_as_one_by_one(monkeypatch):
    """K candidates as one run of K x N samples (split along the sample axis), and a budget
    that runs one candidate in chunks of a few samples: the outputs and scores of running
    each candidate whole."""
    ref = normalized(_recognizer())
    analysis = analyze_channels(import_model(ref))
    metric = get_metric("cosine")
    batched = Evaluator(ref, analysis, _data(), metric)
    chunked = Evaluator(ref, analysis, _data(), metric, memory=3 * 4200)
    assert batched.batched and not chunked.batched and chunked.max_rows < N
    gated = session(batched.oracle.model)
    for keep in _masks(analysis):
        want = gated.run(None, {**_data(), "onnxprune_gates": keep[None]})[0]
        got = chunked.outputs(keep)[0]
        assert got.shape == (T, N, 8)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    masks = _masks(analysis)
    one = np.array([metric([batched.outputs(m)[0]], _data(), batched.reference) for m in masks])
    np.testing.assert_allclose(batched.evaluate_many(masks), one, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chunked.evaluate_many(masks), one, rtol=1e-5, atol=1e-6)


def test_candidates_from_kept_prefixes_join_along_the_sample_axis(monkeypatch):
    ref = normalized(_recognizer())
    analysis = analyze_channels(import_model(ref))
    ev = Evaluator(ref, analysis, _data(), get_metric("cosine"), memory=3 * 4200)
    assert ev.max_rows < N
    monkeypatch.setattr(prefix, "MIN_SHARE", 2.0)  # no point: every candidate run whole
    whole = RefitEvaluator(ev, import_model(ref), ref, analysis, _data())
    monkeypatch.setattr(prefix, "MIN_SHARE", 0.05)
    monkeypatch.setattr(prefix, "SPACING", 0.0)
    fast = RefitEvaluator(ev, import_model(ref), ref, analysis, _data(), grams_of=whole)
    assert fast.prefixes.points
    for keep in _masks(analysis):
        want, got = whole.outputs(keep)[0], fast.outputs(keep)[0]
        assert want.shape == got.shape == (T, N, 8)
        np.testing.assert_array_equal(got, want)
    assert fast.prefixes.stats["suffix"] > 0


def test_the_sample_axis_is_named_where_the_inputs_hold_their_samples():
    """Inputs that hold their samples second (``[time, batch, features]``, axes given): an
    output ``[batch, time, classes]`` holds them first, not where the inputs' first name is."""
    b = GraphBuilder(seed=2)
    x = b.input("x", ["time", "batch", 4])
    y = b.op("Transpose", [b.matmul(x, 4, 3, name="fc")], perm=[1, 0, 2])
    model = b.build([(y, ["batch", "time", 3])])
    assert output_axes(model, None, {"x": 1}) == [0]
    assert output_axes(model) == [1]  # read as batch-first inputs: "time" is the sample axis
    assert output_axes(model, ["missing"]) == [0]
