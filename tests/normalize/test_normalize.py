"""Load and normalize: BN folding, Identity/Dropout removal, constant Reshape targets."""

import numpy as np
import onnx
import pytest

from onnxprune.ir.graph import import_model
from onnxprune.ir.runtime import random_feeds, session
from onnxprune.testing import check_oracle, normalized
from onnxprune.verify.compare import max_diffs
from onnxprune.zoo.builder import GraphBuilder


def _ops(model):
    return [n.op_type for n in model.graph.node]


def _same_outputs(a, b, tol=1e-5):
    feeds = random_feeds(a, seed=1)
    diff = max_diffs(session(b).run(None, feeds), session(a).run(None, feeds))[1]
    assert diff < tol, diff
    return diff


@pytest.mark.parametrize("layer", ["conv", "convt", "convt_g2", "gemm", "gemm_nt", "gemm_noc"])
def test_batchnorm_folds_exactly(layer):
    b = GraphBuilder(seed=3)
    if layer.startswith("gemm"):
        x = b.input("x", [4, 6])
        if layer == "gemm_noc":
            h = b.op("Gemm", [x, b.weight(6, 10)], alpha=0.7)
        else:
            w = b.weight(10, 6) if layer == "gemm" else b.weight(6, 10)
            h = b.op("Gemm", [x, w, b.const(np.arange(10, dtype=np.float32))],
                     transB=int(layer == "gemm"), beta=0.5)
        c = 10
    else:
        x = b.input("x", [2, 4, 6, 6])
        if layer == "conv":
            h = b.conv(x, 4, 8)
        else:
            h = b.conv_transpose(x, 4, 8, group=2 if layer == "convt_g2" else 1)
        c = 8
    y = b.relu(b.batchnorm(h, c))
    model = b.build([y])
    norm = normalized(model)
    assert "BatchNormalization" not in _ops(norm)
    _same_outputs(model, norm)


def test_batchnorm_not_folded_when_conv_output_is_shared():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 6, 6])
    h = b.conv(x, 3, 4)
    y1 = b.batchnorm(h, 4)
    y2 = b.relu(h)
    norm = normalized(b.build([y1, y2]))
    assert "BatchNormalization" in _ops(norm)


def test_identity_and_dropout_are_dropped_and_output_names_kept():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 6, 6])
    h = b.op("Identity", [b.conv(x, 3, 4)])
    h = b.op("Dropout", [b.relu(h)])
    y = b.op("Identity", [b.conv(h, 4, 2)], name="final")
    model = b.build([y])
    norm = normalized(model)
    assert "Identity" not in _ops(norm) and "Dropout" not in _ops(norm)
    assert [o.name for o in norm.graph.output] == [o.name for o in model.graph.output]
    _same_outputs(model, norm)


def _shape_chain_unflatten(opset=17):
    """What torch's TorchScript exporter writes for a dynamic-batch Unflatten."""
    b = GraphBuilder(opset=opset)
    z = b.input("z", ["batch", 8])
    h = b.relu(b.gemm(z, 8, 6 * 4, name="fc"))
    shape = b.op("Shape", [h])
    batch = b.op("Slice", [shape, b.const(np.array([0])), b.const(np.array([1])),
                           b.const(np.array([0]))])
    target = b.op("Concat", [batch, b.const(np.array([6, 2, 2]))], axis=0)
    h = b.op("Reshape", [h, target], name="unflatten")
    y = b.conv(b.relu(b.conv_transpose(h, 6, 4, name="up")), 4, 1)
    return b.build([y])


def test_shape_chain_reshape_becomes_constant():
    model = _shape_chain_unflatten()
    norm = normalized(model)
    assert "Shape" not in _ops(norm) and "Concat" not in _ops(norm)
    reshape = next(n for n in norm.graph.node if n.op_type == "Reshape")
    target = next(i for i in norm.graph.initializer if i.name == reshape.input[1])
    assert onnx.numpy_helper.to_array(target).tolist() == [0, 6, 2, 2]
    res = check_oracle(model, trials=3)
    g = next(g for g in res.analysis.groups if "fc" in g.layers)
    assert g.channels == 6 and not g.frozen


def test_computed_size_in_a_reshape_target_becomes_minus_one():
    """Attention folds heads into the batch: [N, L, E] -> [N * heads, L, E / heads] with N read
    from the input. The product is unknown but inferable: -1 (the target becomes constant)."""
    b = GraphBuilder(opset=17)
    x = b.input("x", ["n", 5, 8])
    h = b.matmul(x, 8, 8, name="proj")
    n = b.op("Gather", [b.op("Shape", [h]), b.const(np.array(0))], name="n")
    nh = b.op("Unsqueeze", [b.op("Mul", [n, b.const(np.array(4))]), b.const(np.array([0]))])
    target = b.op("Concat", [nh, b.const(np.array([5])), b.const(np.array([2]))], axis=0)
    y = b.op("Softmax", [b.op("Reshape", [h, target], name="fold")], axis=1)
    model = b.build([y])
    norm = normalized(model)
    fold = next(n for n in norm.graph.node if n.op_type == "Reshape")
    value = next(i for i in norm.graph.initializer if i.name == fold.input[1])
    assert onnx.numpy_helper.to_array(value).tolist() == [-1, 5, 2]
    _same_outputs(model, norm)


def test_constant_nodes_become_initializers():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 4, 4])
    h = b.conv(x, 3, 4, name="c1")
    k = b.op("Constant", [], value=onnx.numpy_helper.from_array(
        np.linspace(1, 2, 4).astype(np.float32).reshape(1, 4, 1, 1)))
    y = b.conv(b.op("Mul", [h, k]), 4, 2)
    res = check_oracle(b.build([y]), trials=3)
    g = next(g for g in res.analysis.groups if "c1" in g.layers)
    assert not g.frozen and len(g.params) == 4  # c1 rows, c1 bias, Mul constant, next conv


def test_normalized_graph_has_shapes_for_analysis():
    graph = import_model(normalized(_shape_chain_unflatten()))
    reshape = next(n for n in graph.nodes if n.op == "Reshape")
    assert reshape.outputs[0].shape[1:] == [6, 2, 2]


@pytest.mark.parametrize("with_bn", [False, True])
def test_shape_inference_runs_again_only_after_a_change(monkeypatch, with_bn):
    """Normalization infers shapes once when no step changes the graph; a step that changes
    it (a BatchNorm folded) makes the next inference run."""
    from onnxprune.pipeline import Context, Normalize, Pipeline, UseModel
    from onnxprune.pipeline.passes import frontend

    calls = []
    real = frontend.infer_shapes
    monkeypatch.setattr(frontend, "infer_shapes", lambda g: calls.append(1) or real(g))
    b = GraphBuilder(seed=0)
    x = b.input("x", ["batch", 3, 16, 16])
    h = b.conv(x, 3, 8, name="c0")
    h = b.batchnorm(h, 8) if with_bn else h
    model = b.build([b.relu(h)], "net")
    ctx = Context()
    Pipeline([UseModel(model), Normalize()])(ctx)
    ran = [r for name, r in ctx.log if name == "infer-shapes"]
    folded = any(r.modified for name, r in ctx.log if name == "fold-batchnorm")
    assert folded == with_bn
    # before the fixpoint, then once after the round that folded; every other run skipped
    assert len(calls) == (2 if with_bn else 1)
    assert sum(bool(r.info.get("skipped")) for r in ran) == len(ran) - len(calls) > 0
    assert all(t.shape is not None for t in ctx.graph.tensors().values())


def test_a_squeeze_without_axes_on_a_symbolic_batch_is_left_alone(tmp_path):
    """Opset 11, ``Squeeze`` without axes on ``[batch, 1]``: at batch 1 it drops both axes, so
    naming ``axes=[1]`` would change the output; the symbolic size is not guessed (it was:
    exit 6, "squeeze-axes changed the model's outputs")."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from onnxprune.api import prune

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((1, 16)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1, name="fc1"),
             helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("Gemm", ["a", "w2"], ["y"], transB=1, name="fc2"),
             helper.make_node("Squeeze", ["y"], ["out"], name="sq")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    r = prune(model, tmp_path / "o.onnx", ratio=0.3)
    assert r.verification.passed and [s["x"][0] for s in r.verification.shapes] == [1, 2]
    sq = next(n for n in r.model.graph.node if n.op_type == "Squeeze")
    assert not sq.attribute and len(sq.input) == 1  # still without axes
    assert r.params_after < r.params_before


def test_channels_through_a_squeeze_without_axes_are_kept_with_the_reason():
    """``x.squeeze()`` after global pooling on a symbolic batch (old torch exports): the
    channel axis could be cut to one channel and then dropped too; it is kept, and says why."""
    from onnxprune.api import analyze
    from onnxprune.zoo.builder import GraphBuilder

    b = GraphBuilder(seed=1, opset=11)
    x = b.relu(b.conv(b.input("img", ["batch", 3, 8, 8]), 3, 16))
    pooled = b.op("GlobalAveragePool", [x])
    flat = b.op("Squeeze", [pooled])
    model = b.build([(b.gemm(flat, 16, 4), ["batch", 4])])
    groups = analyze(model).channels.groups
    conv = next(g for g in groups if g.channels == 16)
    assert conv.frozen and "without axes" in conv.reason
