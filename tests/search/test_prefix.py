"""Candidates run from a kept prefix: the same outputs as the whole gated graph."""

import numpy as np
import pytest
from conftest import residual_convnet

from onnxprune.analysis.channels import analyze_channels
from onnxprune.ir import weights
from onnxprune.ir.graph import import_model
from onnxprune.ir.weights import to_skeleton
from onnxprune.recover.refit import RefitEvaluator
from onnxprune.search import evaluate, memory, prefix
from onnxprune.search.evaluate import Evaluator
from onnxprune.search.quality import get_metric
from onnxprune.testing import normalized
from onnxprune.zoo.builder import GraphBuilder


def _net(batch="batch"):
    return residual_convnet(batch, seed=7)


def _mlp():
    """Token features through matrix products (a transformer block's MLP, a residual over
    the middle two): kernels that onnxruntime prepacks when their weights are initializers."""
    b = GraphBuilder(seed=3)
    x = b.input("x", ["batch", 6, 16])
    h = b.relu(b.matmul(x, 16, 48, name="up"))
    h = b.relu(b.matmul(h, 48, 32, name="mid"))
    skip = h
    h = b.relu(b.matmul(h, 32, 40, name="wide"))
    h = b.relu(b.op("Add", [b.matmul(h, 40, 32, name="down"), skip]))
    h = b.relu(b.matmul(h, 32, 24, name="late"))
    return b.build([b.matmul(h, 24, 8, name="out"), b.matmul(x, 16, 4, name="early")])


def _evaluators(model, n, monkeypatch, budget=prefix.BUDGET, skeleton=False):
    ref = normalized(model)
    if skeleton:  # the weights outside the proto, as a pipeline holds a large model's
        monkeypatch.setattr(weights, "EXTERNAL_BYTES", 64)
        ref = to_skeleton(ref)
        assert ref.arrays
    analysis = analyze_channels(import_model(ref))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    calib = {"x": np.random.default_rng(0).standard_normal((n, *dims)).astype(np.float32)}
    ev = Evaluator(ref, analysis, calib, get_metric("cosine"))
    monkeypatch.setattr(prefix, "MIN_SHARE", 2.0)  # no point: every candidate run whole
    whole = RefitEvaluator(ev, import_model(ref), ref, analysis, calib)
    monkeypatch.setattr(prefix, "MIN_SHARE", 0.05)
    monkeypatch.setattr(prefix, "BUDGET", budget)
    fast = RefitEvaluator(ev, import_model(ref), ref, analysis, calib, grams_of=whole)
    assert not whole.prefixes.points and fast.prefixes.points
    return analysis, whole, fast


def _own_memory(a: np.ndarray) -> bool:
    """``a``'s memory is numpy's (its own or another array's), not onnxruntime's."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a.base is None and a.flags.owndata


def _candidates(analysis, rng, count=40):
    """Curve points (one group cut), path steps (a state deepened by one group) and repeats,
    with gates between 0 and 1 among them."""
    groups = [g for g in analysis.groups if not analysis.unit_frozen[g.units].any()]
    masks, state = [], np.ones(analysis.num_units, np.float32)
    for i in range(count):
        g = groups[i % len(groups)]
        cut = rng.choice(g.units, size=max(1, g.units.size // 3), replace=False)
        if i % 3 == 0:  # a curve point
            keep = np.ones(analysis.num_units, np.float32)
            keep[cut] = 0.0
        else:  # a path step from the state
            keep = state.copy()
            keep[cut] = 0.0 if i % 5 else 0.5
            if i % 2:
                state = keep
        masks.append(keep)
        if i % 7 == 0:
            masks.append(keep.copy())  # asked again
    return masks


@pytest.mark.parametrize("net,budget,skeleton", [
    # 144,001 bytes: the unpruned base keeps 2 of its 4 points, few other bases fit
    (_net, prefix.BUDGET, False), (_net, 144_001, False), (_net, prefix.BUDGET, True),
    (_mlp, prefix.BUDGET, True)])
def test_every_candidate_gets_the_whole_graphs_outputs(monkeypatch, net, budget, skeleton):
    """Outputs (both, the early one included) of the graph run from kept tensors equal the
    whole graph's for every candidate: exactly, as the same kernels compute the same nodes on
    the same values; with a budget too small to keep most bases, and with the weights held
    outside the model (a skeleton), too: then every session reads the skeleton's arrays where
    they are (onnxruntime copies initializers, and prepacks a matrix product's: a copy of the
    weights per point, 11 GB on a 258M-parameter Llama)."""
    analysis, whole, fast = _evaluators(net(), 9, monkeypatch, budget, skeleton)
    for keep in _candidates(analysis, np.random.default_rng(1)):
        want, got = whole.outputs(keep), fast.outputs(keep)
        assert len(want) == len(got) == 2
        for w, g in zip(want, got, strict=True):
            np.testing.assert_array_equal(g, w)
    stats = fast.prefixes.stats
    assert stats["suffix"] > 10 and stats["sessions"] >= 2
    assert fast.prefixes.kept <= fast.prefixes.budget
    # what the bases keep past a run owns its memory (a view of the shared arena would hold
    # its region); the candidates' outputs, scored and dropped, need not
    bases = [fast.prefixes.unpruned, *fast.prefixes.bases.values()]
    kept = [a for b in bases for parts in b.kept.values() for chunk in parts for a in chunk]
    assert kept and all(_own_memory(a) for a in kept)
    if skeleton:
        arrays = fast.prefixes.model.arrays  # the weights not refit (those are fed per candidate)
        sessions = [whole.session, fast.session,
                    *(s.session for s in fast.prefixes.suffixes.values())]
        fed = set()
        for sess in sessions:  # (noqa: what each session feeds, or copied in)
            held = sess._weights  # noqa: SLF001
            if not held:  # a suffix without a large weight: nothing to copy
                assert not sess._onnxprune_weights[0]  # noqa: SLF001
                continue
            assert all(held[k] is arrays[k] for k in held if k in arrays)
            fed |= set(held)
        assert set(arrays) <= fed


def test_the_refit_searchs_calls_count_the_points_tensors(monkeypatch):
    """As the plain search's: under a budget that holds exactly the 9 samples of a whole run,
    the refit evaluator's calls take fewer with its points' tensors (outputs of every run),
    its kept tensors follow the new chunks, and the outputs are the whole graph's."""
    ref = normalized(_net())
    analysis = analyze_channels(import_model(ref))
    calib = {"x": np.random.default_rng(0).standard_normal((9, 3, 10, 10)).astype(np.float32)}
    cosine = get_metric("cosine")
    per = Evaluator(ref, analysis, calib, cosine).per_sample
    budget = int(per * memory.RUNTIME_FACTOR) * 9
    ev = Evaluator(ref, analysis, calib, cosine, memory=budget)
    assert ev.max_rows == 9
    monkeypatch.setattr(prefix, "MIN_SHARE", 2.0)
    whole = RefitEvaluator(ev, import_model(ref), ref, analysis, calib)
    monkeypatch.setattr(prefix, "MIN_SHARE", 0.05)
    fast = RefitEvaluator(ev, import_model(ref), ref, analysis, calib, grams_of=whole)
    pre = fast.prefixes
    assert pre.points and not whole.prefixes.points
    rows = budget // int((per + pre.held_per_sample(9)) * memory.RUNTIME_FACTOR)
    assert pre.max_rows == rows < 9
    assert len(pre.unpruned.kept[pre.points[0]]) == -(-9 // rows)
    for keep in _candidates(analysis, np.random.default_rng(3), 16):
        for w, g in zip(whole.outputs(keep), fast.outputs(keep), strict=True):
            np.testing.assert_array_equal(g, w)
    assert pre.stats["suffix"] > 0


def test_a_fixed_batch_is_chunked_and_padded_alike(monkeypatch):
    """A model exported for batches of 4, on 10 samples: three chunks, the last padded; the
    kept tensors follow the chunks."""
    analysis, whole, fast = _evaluators(_net(batch=4), 10, monkeypatch)
    assert fast.ev.static_batch == 4
    for keep in _candidates(analysis, np.random.default_rng(2), 20):
        for w, g in zip(whole.outputs(keep), fast.outputs(keep), strict=True):
            assert g.shape[0] == 10
            np.testing.assert_array_equal(g, w)
    assert fast.prefixes.stats["suffix"] > 5


def test_a_point_stands_where_few_bytes_are_live(monkeypatch):
    """The point serving c4's input gate (c3's 12 channels and the residual's 8 live there)
    stands before c3 (and before the early output's convolution), where only c2's 8 channels
    are: a third of the bytes, for a little more work each run (SLACK lets it go back that
    far here)."""
    monkeypatch.setattr(prefix, "SLACK", 0.3)
    n = 4
    analysis, _, fast = _evaluators(_net(), n, monkeypatch)
    p = fast.prefixes
    gate = next(i for i, g in enumerate(analysis.gates) if g.node.startswith("c4"))
    at = [i for i, node in enumerate(p._model.graph.node)
          if node.name == f"{analysis.gates[gate].node}/onnxprune_gate{gate}_gather"][0]
    q = max(pt for pt in p.points if pt <= at)
    fast.outputs(np.ones(analysis.num_units, np.float32))  # the unpruned base: every point
    held = sum(a.nbytes for a in p.unpruned.kept[q][0])
    assert held == 8 * 100 * 4 * n < (12 + 8 + 2) * 100 * 4 * n


def _plain(model, n, monkeypatch, skeleton=False, **kw):
    """The plain evaluator with prefixes from its first candidate, and one without."""
    ref = normalized(model)
    if skeleton:
        monkeypatch.setattr(weights, "EXTERNAL_BYTES", 64)
        ref = to_skeleton(ref)
    analysis = analyze_channels(import_model(ref))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    calib = {"x": np.random.default_rng(0).standard_normal((n, *dims)).astype(np.float32)}
    monkeypatch.setattr(prefix, "MIN_SHARE", 0.05)
    monkeypatch.setattr(evaluate, "PREFIX_AFTER", 0)
    monkeypatch.setattr(evaluate, "PREFIX_MACS", 0)  # these nets' runs are all overhead
    fast = Evaluator(ref, analysis, calib, get_metric("cosine"), **kw)
    whole = Evaluator(ref, analysis, calib, get_metric("cosine"), prefixes=False)
    whole.batched = False  # one candidate a run, whole
    return analysis, whole, fast


@pytest.mark.parametrize("net,skeleton", [(_net, False), (_mlp, True)])
def test_the_plain_evaluator_scores_candidates_from_kept_prefixes(monkeypatch, net, skeleton):
    """The search's evaluator without a refit runs candidates from kept points too: every
    score and output bit-equal to the whole gated graph's, one candidate a run (its sessions
    hold the weights as initializers, as the oracle's: the same bits at any thread count)."""
    analysis, whole, fast = _plain(net(), 9, monkeypatch, skeleton)
    monkeypatch.setattr(prefix, "MAX_BASES", 6)  # each candidate is compared with every base
    masks = np.array(_candidates(analysis, np.random.default_rng(4)))
    want = np.array([whole.score(whole.outputs(m)) for m in masks])
    np.testing.assert_array_equal(fast.evaluate_many(masks), want)
    stats = fast.prefixes.stats
    assert stats["suffix"] > 10 and stats["whole"] < len(masks) // 2
    assert len(fast.prefixes.bases) == 6
    for keep in masks[:6]:
        got = fast.prefixes.run(fast.oracle.session, keep)
        for w, g in zip(whole.outputs(keep), got, strict=True):
            np.testing.assert_array_equal(g, w)
    fast.close()  # the kept tensors given back; the next candidate fills them again
    assert fast.prefixes.kept == 0 and fast.prefixes.unpruned is None
    assert fast.evaluate(masks[3]) == want[3]


def test_few_candidates_or_small_ones_run_whole(monkeypatch):
    """An evaluator that scores a handful of candidates (the chosen cut, after a refit's
    search) does not build the prefixes' session and unpruned run for them; one whose
    candidates are small runs them K at a time (a run there is mostly call overhead)."""
    analysis, _, fast = _plain(_net(), 5, monkeypatch, costs={"c1": 10**6})
    monkeypatch.setattr(evaluate, "PREFIX_AFTER", 8)
    masks = np.array(_candidates(analysis, np.random.default_rng(5), 12))
    for m in masks[:8]:
        fast.evaluate(m)
    assert fast.prefixes is None
    fast.evaluate_many(masks[8:])
    assert fast.prefixes and fast.prefixes.stats["suffix"] > 0
    assert fast.work == 5 * 10**6
    monkeypatch.setattr(evaluate, "PREFIX_MACS", 5 * 10**6 + 1)
    small = Evaluator(fast._reference, analysis, fast.calib, fast.metric, costs={"c1": 10**6})
    small.evaluate_many(masks)
    assert small.batched and small.prefixes is None


def test_the_suffixes_own_weights_fit_the_budget(monkeypatch):
    """Sessions holding their weights as initializers each copy those after their point: the
    points kept, the latest first, are those whose copies fit the budget together (a 258M
    Llama's 20+ points each copying the weights after it reached 11 GB)."""
    model = _mlp()
    ref = normalized(model)
    analysis = analyze_channels(import_model(ref))
    calib = {"x": np.random.default_rng(0).standard_normal((4, 6, 16)).astype(np.float32)}
    monkeypatch.setattr(prefix, "MIN_SHARE", 0.05)
    monkeypatch.setattr(prefix, "SPACING", 0.0)
    ev = Evaluator(ref, analysis, calib, get_metric("cosine"))

    def points(budget, feed):
        return prefix.Prefixes(ev.oracle.model, analysis, ev.oracle.output_names,
                               lambda k: {}, ev.inputs, ev.axes, None, None,
                               weights=None if feed else budget).points

    every = points(1 << 30, True)
    nodes = list(ev.oracle.model.graph.node)  # the gated graph's, where points stand
    sizes = prefix.suffix_weights(ev.oracle.model, nodes, every)
    assert len(every) >= 3 and sizes == sorted(sizes, reverse=True) and sizes[-1] > 0
    budget = sizes[-1] + sizes[-2] + 4  # room for the last two points' copies alone
    assert points(budget, False) == every[-2:]
    assert points(budget, True) == every  # read where they are: no copy to fit
    assert points(sizes[-1] - 1, False) == []


def test_points_the_unpruned_run_drops_are_not_output(monkeypatch):
    """Points whose tensors do not fit the budget (found by the unpruned run) leave the
    oracle's session too: it no longer outputs them (onnxruntime keeps a graph output's memory
    to the end of every run, those K at a time included)."""
    analysis, whole, fast = _plain(_net(), 9, monkeypatch)
    masks = np.array(_candidates(analysis, np.random.default_rng(6), 12))
    fast.evaluate_many(masks)
    every = list(fast.prefixes.points)
    sizes = [sum(a.nbytes for a in fast.prefixes.unpruned.kept[q][0]) for q in every]
    assert len(every) >= 2
    monkeypatch.setattr(evaluate, "PREFIX_TENSORS", int(2 * sizes[-1]) + 1)  # the last alone
    analysis, whole, small = _plain(_net(), 9, monkeypatch)
    want = np.array([whole.score(whole.outputs(m)) for m in masks])
    np.testing.assert_array_equal(small.evaluate_many(masks), want)
    pre = small.prefixes
    assert pre.points == every[-1:]
    outputs = {o.name for o in small.oracle.session.get_outputs()}
    assert outputs == set(small.oracle.output_names) | set(pre.live[every[-1]])


def test_the_points_tensors_count_in_a_calls_memory(monkeypatch):
    """The points' tensors are outputs of every run (held to its end): under a budget that
    holds exactly the 9 samples of a whole run, a run with them takes fewer samples a call,
    the candidates no longer run K at a time, and the kept tensors follow the new chunks."""
    per = _plain(_net(), 9, monkeypatch)[2].per_sample
    budget = int(per * memory.RUNTIME_FACTOR) * 9
    analysis, whole, fast = _plain(_net(), 9, monkeypatch, memory=budget)
    assert fast.max_rows == 9 and fast.batched
    masks = np.array(_candidates(analysis, np.random.default_rng(7), 16))
    want = np.array([whole.score(whole.outputs(m)) for m in masks])
    np.testing.assert_allclose(fast.evaluate_many(masks), want, rtol=1e-6)
    pre = fast.prefixes
    assert pre and pre.stats["suffix"] > 0
    assert fast.max_rows < 9 and not fast.batched and pre.max_rows == fast.max_rows
    held = per + pre.held_per_sample(9)
    assert fast.max_rows == budget // int(held * memory.RUNTIME_FACTOR)
    chunks = -(-9 // fast.max_rows)  # the unpruned run filled again in the smaller chunks
    assert chunks > 1 and len(pre.unpruned.kept[pre.points[0]]) == chunks


def test_a_point_too_large_is_passed_over_for_an_earlier_smaller_one(monkeypatch):
    """The unpruned base keeps its points latest first within its share of the budget; one
    too large there is passed over, not the end of them: an earlier point that holds less is
    still kept (a detector's neck widens again after its backbone narrowed: ddddocr's
    YOLOX-style detector kept only the last quarter of its work, and candidates in the
    backbone ran whole)."""
    analysis, _, fast = _evaluators(_net(), 9, monkeypatch)
    pre = fast.prefixes
    every = list(pre.points)
    assert len(every) >= 3
    share = pre.budget * prefix.BASE_SHARE
    sizes = {q: share / 4 for q in every}
    sizes[every[-2]] = share  # with the last one kept, no longer room for it
    base = prefix._Base(np.ones(analysis.num_units, np.float32),
                        {q: [[np.zeros(int(sizes[q]) // 4, np.float32)]] for q in every})
    kept = pre._trimmed(base)
    want = sorted([every[-1], *every[:-2][-2:]])  # the last, then earlier ones while room
    assert pre.points == want and set(kept.kept) == set(want)


def test_the_refit_search_outputs_the_kept_points_tensors_only(monkeypatch):
    """Points the unpruned refit run drops (their tensors beyond the budget) leave the refit
    evaluator's whole-graph session: it outputs the model's outputs and the kept points'
    tensors, and every candidate still gets the whole graph's outputs."""
    analysis, whole, fast = _evaluators(_net(), 9, monkeypatch)
    every = list(fast.prefixes.points)
    sizes = [sum(a.nbytes for a in fast.prefixes.unpruned.kept[q][0]) for q in every]
    assert len(every) >= 2
    budget = int(max(sizes) / prefix.BASE_SHARE) - 1  # no room for the largest
    _, whole, small = _evaluators(_net(), 9, monkeypatch, budget=budget)
    kept = small.prefixes.points
    assert kept and set(kept) < set(every)
    outputs = {o.name for o in small.session.get_outputs()}
    assert outputs == set(small.names) | {t for q in kept for t in small.prefixes.live[q]}
    for keep in _candidates(analysis, np.random.default_rng(8), 12):
        for w, g in zip(whole.outputs(keep), small.outputs(keep), strict=True):
            np.testing.assert_array_equal(g, w)
