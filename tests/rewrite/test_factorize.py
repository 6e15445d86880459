"""Factorizing wide matrices: a token table (and, asked for, a classifier) is written as U S and
Vt, so its rank prunes as a channel group; the factorized graph computes what the model did,
the pruned one keeps the best rank-k approximation (compensation does not refit it toward the
calibration data), a matrix whose kept rank saves nothing gets its original array back or the
product of its factors, and parameter targets count from the input model."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.api import prune
from onnxprune.rewrite.factorize import candidates, factorize, unfactorize

VOCAB, DIM, CLASSES = 1024, 32, 512


def _model(vocab: int = VOCAB, shared: bool = False, seed: int = 0, head: bool = True
           ) -> onnx.ModelProto:
    """ids [N, 8] -> a token table (energy falling with the column) -> a residual MLP -> mean
    over the tokens -> a classifier over CLASSES. ``shared``: the classifier reads the
    table's transpose (a tied head) instead of a weight of its own; ``head=False``: the
    output is the mean (a sentence embedding, whose width stays)."""
    rng = np.random.default_rng(seed)
    table = (rng.normal(size=(vocab, DIM)) * 0.9 ** np.arange(DIM)).astype(np.float32)
    w1 = (rng.normal(size=(DIM, 64)) / np.sqrt(DIM)).astype(np.float32)
    w2 = (rng.normal(size=(64, DIM)) / 8).astype(np.float32)
    weight = (rng.normal(size=(DIM, CLASSES)) * 0.85 ** np.arange(DIM)[:, None]).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (table, "emb"), (w1, "w1"), (w2, "w2"), (np.array([1], np.int64), "axis"))]
    if head and not shared:
        inits.append(numpy_helper.from_array(weight, "head"))
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"]),
             helper.make_node("MatMul", ["e", "w1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"]),
             helper.make_node("Add", ["h2", "e"], ["s"]),
             helper.make_node("ReduceMean", ["s", "axis"], ["pooled"], keepdims=0)]
    out = "logits" if head else "pooled"
    if not head:
        pass
    elif shared:
        nodes += [helper.make_node("Transpose", ["emb"], ["emb_t"], perm=[1, 0]),
                  helper.make_node("MatMul", ["pooled", "emb_t"], ["logits"])]
    else:
        nodes.append(helper.make_node("MatMul", ["pooled", "head"], ["logits"]))
    graph = helper.make_graph(
        nodes, "factors", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 8])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", None])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"ids": ids})[0]


def _ids(n: int = 64, seed: int = 1, vocab: int = VOCAB) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, (n, 8))


def _params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(i.dims)) for i in model.graph.initializer)


def test_the_factorized_graph_computes_what_the_model_did():
    model = _model()
    graph = gs.import_onnx(model)
    factors = factorize(graph, kinds=("table", "linear"))
    assert sorted(f.weight for f in factors) == ["emb", "head"]
    out = gs.export_onnx(graph)
    onnx.checker.check_model(out, full_check=True)
    shapes = {i.name: list(i.dims) for i in out.graph.initializer}
    assert "emb" not in shapes and "head" not in shapes
    assert shapes["emb.factor_a"] == [VOCAB, DIM] and shapes["emb.factor_b"] == [DIM, DIM]
    assert shapes["head.factor_a"] == [DIM, DIM] and shapes["head.factor_b"] == [DIM, CLASSES]
    ids = _ids()
    # float32 factors of a float64 decomposition, summed in another order: 1e-5 of the scale
    want, got = _run(model, ids), _run(out, ids)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_nothing_cut_gives_the_original_arrays_back():
    model = _model()
    graph = gs.import_onnx(model)
    factors = factorize(graph, kinds=("table", "linear"))
    summary = unfactorize(graph, factors)
    assert [s["factorized"] for s in summary] == [False, False]
    out = gs.export_onnx(graph)
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert np.array_equal(after[name], value), name
    assert sorted(n.op_type for n in out.graph.node) == sorted(n.op_type for n in model.graph.node)


def test_a_rank_that_saves_nothing_is_multiplied_back():
    """256 x 32 breaks even at rank 28.4: rank 30 stores more as two factors, so the product
    (the same rank-30 function) is stored as one table; rank 20 stays factorized."""
    for rank, factorized in ((30, False), (20, True)):
        model = _model(vocab=256)
        graph = gs.import_onnx(model)
        (f,) = factorize(graph, aspect=8, share=0.0, kinds=("table",))
        tensors = graph.tensors()
        a, b = tensors[f.a], tensors[f.b]
        a.values, b.values = a.values[:, :rank].copy(), b.values[:rank].copy()
        want = a.values.astype(np.float64) @ b.values.astype(np.float64)
        (s,) = unfactorize(graph, [f])
        assert (s["rank"], s["factorized"]) == (rank, factorized)
        out = gs.export_onnx(graph)
        inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
        if factorized:
            assert inits[f.a].shape == (256, rank) and "emb" not in inits
        else:
            assert f.a not in inits and inits["emb"].shape == (256, DIM)
            np.testing.assert_allclose(inits["emb"], want, rtol=0, atol=1e-6)
            assert _params(out) == _params(model)  # the input's size, not more


def test_what_is_not_factorized():
    """A table another node also reads (a tied head), a matrix not long enough, one too small
    a share of the model: left as they are."""
    assert candidates(gs.import_onnx(_model(shared=True))) == []
    graph = gs.import_onnx(_model())
    assert [k for _, k in candidates(graph)] == ["table", "linear"]
    assert candidates(graph, aspect=40) == []  # 1024 / 32 = 32
    assert [k for _, k in candidates(graph, share=0.5)] == ["table"]  # 1024 x 32 of 85k


def test_the_search_cuts_the_rank_and_leaves_the_factors_unrefit(tmp_path):
    model = _model(head=False)  # a sentence embedding: the hidden width is the output's
    path, out = tmp_path / "m.onnx", tmp_path / "p.onnx"
    onnx.save(model, path)
    r = prune(path, out, calib={"ids": _ids(96)}, metric="cosine", strategy="sensitivity",
              target_params=0.3, compensate=True)
    assert r.verification.passed
    (f,) = r.factors
    assert f["matrix"] == "emb" and f["factorized"] and f["rank"] < DIM
    weights = VOCAB * DIM + 2 * DIM * 64  # the input's (not the factorized graph's)
    assert r.params_before == weights and r.params_after <= 0.7 * weights
    written = onnx.load(out)
    assert _params(written) - 1 == r.params_after  # the reduction's axis apart
    inits = {i.name: numpy_helper.to_array(i) for i in written.graph.initializer}
    a, b = inits["emb.factor_a"].astype(np.float64), inits["emb.factor_b"].astype(np.float64)
    assert a.shape == (VOCAB, f["rank"]) and b.shape == (f["rank"], DIM)
    # compensation did not refit the second factor toward the calibration tokens: its kept
    # rows are rows of Vt (orthonormal), and the first factor's columns those of U S
    np.testing.assert_allclose(b @ b.T, np.eye(f["rank"]), atol=1e-5)
    table = numpy_helper.to_array(model.graph.initializer[0]).astype(np.float64)
    u, s, vt = np.linalg.svd(table, full_matrices=False)
    kept = [int(np.argmax(np.abs(vt @ row))) for row in b]
    assert len(set(kept)) == f["rank"]
    np.testing.assert_allclose(np.abs(b), np.abs(vt[kept]), atol=1e-5)
    np.testing.assert_allclose(np.abs(a), np.abs(u[:, kept] * s[kept]), atol=1e-4 * s[0])
    assert np.isfinite(_run(written, _ids(16, seed=7))).all()


def test_uniform_runs_and_factorize_off_leave_the_tables(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_model(), path)
    r = prune(path, tmp_path / "u.onnx", ratio=0.3)
    assert r.factors is None
    r = prune(path, tmp_path / "s.onnx", calib={"ids": _ids(64)}, metric="cosine",
              strategy="sensitivity", target_params=0.2, factorize="off")
    assert r.factors is None
    names = {i.name for i in onnx.load(tmp_path / "s.onnx").graph.initializer}
    assert not any("factor" in n for n in names)


def test_factorize_on_takes_the_classifier_too(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_model(), path)
    r = prune(path, tmp_path / "p.onnx", calib={"ids": _ids(64)}, metric="cosine",
              strategy="sensitivity", target_params=0.3, factorize="on")
    assert r.verification.passed
    assert sorted(f["matrix"] for f in r.factors) == ["emb", "head"]


def test_a_plan_made_with_factors_is_reused_with_them(tmp_path):
    path, plan = tmp_path / "m.onnx", tmp_path / "plan.json"
    onnx.save(_model(head=False), path)
    calib = {"ids": _ids(64)}
    first = prune(path, tmp_path / "a.onnx", calib=calib, metric="cosine",
                  strategy="sensitivity", target_params=0.3, save_plan=plan)
    again = prune(path, tmp_path / "b.onnx", calib=calib, metric="cosine", plan=plan,
                  compensate=True)
    assert again.verification.passed and again.factors == first.factors
    assert again.params_after == first.params_after


def test_a_token_model_searches_on_a_random_token_copy_and_without_the_refit(tmp_path):
    """With the probe measured (a token model, cosine): the search measures candidates on the
    calibration data and one random-token copy when a table was factorized, and as cut (no
    refit), unless asked."""
    path = tmp_path / "m.onnx"
    onnx.save(_model(head=False), path)
    calib = {"ids": _ids(80)}  # 64 fitted, 16 held out
    common = dict(calib=calib, metric="cosine", strategy="sensitivity", target_params=0.3,
                  compensate=True)
    r = prune(path, tmp_path / "a.onnx", **common)
    assert r.selection["search_samples"] == 128 and r.selection.get("refit") is None
    r = prune(path, tmp_path / "b.onnx", factorize="off", search_refit="on", **common)
    assert r.selection["search_samples"] == 64 and r.selection["refit"]["layers"] >= 1
    r = prune(path, tmp_path / "c.onnx", search_augment=2, **common)
    assert r.selection["search_samples"] == 192
    # a draw of 16 (search_samples) and its 2 copies
    r = prune(path, tmp_path / "d.onnx", search_augment=2, search_samples=16, **common)
    assert r.selection["search_samples"] == 48 and r.verification.passed


def test_the_rank_of_the_demo_text_encoders_table_prunes(tmp_path):
    """The zoo's text encoder (a random 4000 x 64 table, a mean over the tokens): the inner
    tensor gets its shape where it is made, so its rank is a prunable group and the target is
    met (it froze as 'not an activation times a 2-D constant weight' when its shape was left to
    an inference the pipeline does not run again)."""
    from onnxprune.zoo.builder import demo_text

    path = tmp_path / "text.onnx"
    onnx.save(demo_text(), path)
    ids = np.random.default_rng(1).integers(1, 4000, (96, 16))
    r = prune(path, tmp_path / "p.onnx", calib={"input_ids": ids}, metric="cosine",
              strategy="sensitivity", target_params=0.3)
    (f,) = r.factors
    assert f["factorized"] and f["rank"] < 64 and r.verification.passed
    assert 1 - r.params_after / r.params_before >= 0.3 - 1e-9


@pytest.mark.parametrize("shape", [(300, 40), (40, 300), (50, 50)])
def test_the_factors_are_the_svds_tall_or_wide(shape):
    """U S and Vt from the smaller Gram matrix: their product is the matrix to float32
    rounding, the first factor's columns carry the singular values in decreasing order, and a
    truncation to rank r is the best one (Eckart-Young: its error is the dropped singular
    values'), as numpy's SVD gives; a rank-deficient matrix stays finite."""
    from onnxprune.rewrite.factorize import _svd

    rng = np.random.default_rng(0)
    w = (rng.standard_normal(shape) * np.exp(-np.arange(shape[1]) / 10)).astype(np.float32)
    a, b = _svd(w)
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    scale = np.abs(w).max()
    assert np.abs(a.astype(np.float64) @ b - w).max() < 1e-5 * scale
    np.testing.assert_allclose(np.linalg.norm(a.astype(np.float64), axis=0), s, rtol=1e-4,
                               atol=1e-6 * s[0])
    r = min(shape) // 3
    err = np.linalg.norm(a[:, :r].astype(np.float64) @ b[:r] - w)
    assert err == pytest.approx(np.sqrt((s[r:] ** 2).sum()), rel=1e-4)
    low = np.outer(np.arange(1, shape[0] + 1), np.ones(shape[1])).astype(np.float32)
    a, b = _svd(low)
    assert np.isfinite(a).all() and np.isfinite(b).all()
    assert np.abs(a.astype(np.float64) @ b - low).max() < 1e-5 * np.abs(low).max()
