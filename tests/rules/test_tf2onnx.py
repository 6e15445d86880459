"""Keras models exported by tf2onnx (tests/data/tf2onnx, made by scripts/make_tf2onnx_bert.py):
its layer norm is spelled with GlobalAveragePool moments and ``x * s + (beta - mean * s)``, its
Gemms read ``[N*T, C]``, and its attention reshapes take targets computed from shapes
(ReduceProd of gathered sizes) and multiply heads folded into the batch. The hidden width, the
heads and the FFN prune as they do for torch exports, proven by the oracle."""

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto

from onnxprune.api import analyze, prune
from onnxprune.ir.runtime import session
from onnxprune.normalize.shape_expr import as_reshape_target, evaluate
from onnxprune.zoo.builder import GraphBuilder

BERT = Path(__file__).resolve().parents[1] / "data" / "tf2onnx" / "bert_tf.onnx"
T, C = 8, 32


def test_the_keras_bert_prunes_hidden_width_heads_and_ffn():
    model = onnx.load(str(BERT))
    groups = analyze(model).channels.groups
    free = sorted(g.channels for g in groups if not g.frozen)
    assert free == [4, 4, 32, 64, 64]  # heads of both layers, the hidden width, both FFNs
    assert [g.reason for g in groups if g.frozen] == ["reaches graph output dense_4"]
    r = prune(model, ratio=0.5)
    assert r.verification.passed and len(r.verification.shapes) == 2
    assert r.params_after < 0.45 * r.params_before
    emb = [i for i in r.model.graph.initializer if list(i.dims) == [100, 16]]
    assert emb, "the token embedding lost half its width"
    sess, ref = session(r.model), session(model)
    for batch in (1, 3):
        ids = np.random.default_rng(batch).integers(0, 100, (batch, T)).astype(np.int32)
        got, want = sess.run(None, {"input_ids": ids})[0], ref.run(None, {"input_ids": ids})[0]
        assert got.shape == want.shape == (batch, 3)


def test_the_keras_bert_takes_the_recipe_with_data():
    """Calibration data through every stage (the oracle's gates broadcast over [N*T, C])."""
    r = prune(onnx.load(str(BERT)), target_params=0.3, strategy="sensitivity",
              calib_random=16, compensate=True)
    assert r.verification.passed and r.params_after <= 0.7 * r.params_before + 1
    rows = {s["stage"] for s in r.stages["stages"]}
    assert {"pruned", "compensate"} <= rows


def _tf_layer_norm(b: GraphBuilder, x: str, seed: int) -> str:
    """TensorFlow's layer norm as tf2onnx writes it: moments by GlobalAveragePool over the last
    axis of [N, T, C], then x * s + (beta - mean * s) with s = gamma / sqrt(var + eps)."""
    rng = np.random.default_rng(seed)
    mean = b.op("GlobalAveragePool", [x])
    d = b.op("Sub", [x, mean])
    var = b.op("GlobalAveragePool", [b.op("Mul", [d, d])])
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, b.const(np.float32(1e-5))])])])
    s = b.op("Mul", [inv, b.const(rng.uniform(0.5, 1.5, C).astype(np.float32))])
    shift = b.op("Sub", [b.const(rng.normal(0, 0.1, C).astype(np.float32)),
                         b.op("Mul", [mean, s])])
    return b.op("Add", [b.op("Mul", [x, s]), shift])


def _flat_block() -> onnx.ModelProto:
    b = GraphBuilder(seed=0, opset=13)
    ids = b.input("ids", ["batch", T])
    b.inputs[-1].type.tensor_type.elem_type = TensorProto.INT64
    table = np.random.default_rng(0).standard_normal((50, C)).astype(np.float32)
    x = _tf_layer_norm(b, b.op("Gather", [b.const(table), ids]), 1)
    h = b.relu(b.gemm(b.reshape(x, [-1, C]), C, 64, name="fc1"))  # [N*T, C] as tf2onnx reads
    y = b.op("Reshape", [b.gemm(h, 64, C, name="fc2"), b.const(np.array([-1, T, C], np.int64))])
    x = _tf_layer_norm(b, b.op("Add", [x, y]), 2)
    return b.build([b.gemm(b.reshape(x, [-1, C]), C, 4, name="head")])


def test_a_layer_norm_of_pooled_moments_prunes_its_width():
    """The mean over channels by GlobalAveragePool is gated as a mean over the kept channels,
    and s, computed from constants, is sliced with them (was: 'pools over axis 2')."""
    model = _flat_block()
    hidden = [g for g in analyze(model).channels.groups if g.channels == C]
    assert len(hidden) == 1 and not hidden[0].frozen
    for kw in ({"ratio": 0.5}, {"ratio": 0.5, "calib_random": 16, "criterion": "activation"}):
        r = prune(model, **kw)
        assert r.verification.passed and r.verification.max_abs_diff < 1e-4
        assert any(list(i.dims) == [50, C // 2] for i in r.model.graph.initializer)


def _reshape_of(shape: list, target_of) -> gs.Node:
    x = gs.Variable("x", np.float32, shape)
    graph = gs.Graph(inputs=[x])
    dims = graph.layer(op="Shape", inputs=[x], outputs=["s"])[0]
    target = target_of(graph, dims)
    y = graph.layer(op="Reshape", inputs=[x, target], outputs=["y"])[0]
    return y.inputs[0], x


def _tf_target(graph: gs.Graph, dims) -> gs.Variable:
    """Concat(ReduceProd(Gather(shape, [0, 1])), [-1], Gather(shape, [4])), as tf2onnx writes."""
    lead = graph.layer(op="Gather", inputs=[dims, np.array([0, 1])], outputs=["g01"])[0]
    prod = graph.layer(op="ReduceProd", inputs=[lead], outputs=["p"], attrs={"keepdims": 1})[0]
    last = graph.layer(op="Gather", inputs=[dims, np.array([4])], outputs=["g4"])[0]
    return graph.layer(op="Concat", inputs=[prod, np.array([-1]), last], outputs=["t"],
                       attrs={"axis": 0})[0]


@pytest.mark.parametrize("shape,expected", [
    (["batch", 4, 1, 8, 8], [-1, 8, 8]),  # batch x heads folded; the -1 is 8 for every batch
    (["batch", 4, 1, "seq", 8], None),  # the -1 holds a symbol: no constant says it
])
def test_a_reshape_target_with_a_product_of_sizes_becomes_constant(shape, expected):
    reshape, x = _reshape_of(shape, _tf_target)
    elems = evaluate(reshape.inputs[1])
    got = as_reshape_target(elems, x)
    assert (got is None) if expected is None else got.tolist() == expected


def test_per_channel_values_read_off_the_stream_freeze_with_the_reason():
    """s = gamma / (mean + 2) multiplies the stream (a join) and also feeds a side path that
    never joins it (a Gemm): cutting gamma would change that path's width unseen, so the
    channels stay, saying why (the run failed verification before)."""
    b = GraphBuilder(seed=0, opset=13)
    x = b.relu(b.gemm(b.input("x", ["N", 8]), 8, 16, name="fc1"))
    mean = b.op("ReduceMean", [x], axes=[1], keepdims=1)
    s = b.op("Mul", [b.op("Reciprocal", [b.op("Add", [mean, b.const(np.float32(2.0))])]),
                     b.const(np.linspace(0.5, 1.5, 16).astype(np.float32))])
    side = b.gemm(b.op("Add", [s, b.const(np.float32(1.0))]), 16, 3, name="fc_side")
    model = b.build([b.gemm(b.op("Mul", [x, s]), 16, 3, name="fc2"), side])
    group = next(g for g in analyze(model).channels.groups if g.channels == 16)
    assert group.frozen and "without following their channels" in group.reason
    r = prune(model, ratio=0.5)
    assert r.verification.passed and r.params_after == r.params_before
