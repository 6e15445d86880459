"""What a pruned model keeps of the input beyond its graph: metadata (a package's label map),
doc string, producer, version, domain, and graph output types the IR round trip would lose."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxprune.api import prune
from onnxprune.zoo.builder import demo_cnn


def test_model_fields_are_kept(tmp_path):
    m = demo_cnn()
    helper.set_model_props(m, {"character": "abc\ndef", "names": "{0: 'cat'}"})
    m.doc_string, m.producer_name, m.producer_version = "a CNN", "paddle2onnx", "1.0"
    m.model_version, m.domain = 7, "ai.example"
    src = tmp_path / "m.onnx"
    onnx.save(m, str(src))
    r = prune(src, tmp_path / "o.onnx", ratio=0.5)
    out = onnx.load(str(r.output))
    assert {p.key: p.value for p in out.metadata_props} == {"character": "abc\ndef",
                                                            "names": "{0: 'cat'}"}
    assert (out.doc_string, out.producer_name, out.producer_version) == ("a CNN", "paddle2onnx",
                                                                         "1.0")
    assert (out.model_version, out.domain) == (7, "ai.example")
    assert r.params_after < r.params_before
    assert {p.key for p in r.model.metadata_props} == {"character", "names"}


def test_an_output_shape_shadowed_by_value_info_is_kept(tmp_path):
    """A shapeless value_info for a graph output (old exporters write them) must not erase the
    output's shape in the written model: the full checker requires it."""
    m = demo_cnn()
    out = m.graph.output[0]
    m.graph.value_info.append(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, None))
    src = tmp_path / "m.onnx"
    onnx.save(m, str(src))
    r = prune(src, tmp_path / "o.onnx", ratio=0.5)
    written = onnx.load(str(r.output))
    assert written.graph.output[0].type.tensor_type.HasField("shape")
    onnx.checker.check_model(written, full_check=True)


def test_sequence_of_map_outputs_survive(tmp_path):
    """scikit-learn classifiers converted with their default ZipMap output (a sequence of
    maps): prune, verify and write a model whose outputs are still those sequences."""
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    clf = MLPClassifier((32,), max_iter=60, random_state=0).fit(x[:600], y[:600])
    model = skl2onnx.to_onnx(clf, x[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3})
    assert any(n.op_type == "ZipMap" for n in model.graph.node)
    src = tmp_path / "sk.onnx"
    onnx.save(model, str(src))
    r = prune(src, tmp_path / "o.onnx", ratio=0.5)
    written = onnx.load(str(r.output))
    kinds = [o.type.WhichOneof("value") for o in written.graph.output]
    assert kinds == [o.type.WhichOneof("value") for o in model.graph.output]
    assert "sequence_type" in kinds and r.verification.passed
    assert r.params_after < r.params_before
    import onnxruntime as ort

    probs = ort.InferenceSession(str(r.output)).run(None, {"X": x[600:605].astype(np.float32)})[1]
    assert len(probs) == 5 and set(probs[0]) == set(range(10))


def tied_layers():
    """One layer's weights used by every layer, shared through Identity nodes as the torch
    exporter writes tied weights (ALBERT)."""
    from onnxprune.zoo.builder import GraphBuilder

    b = GraphBuilder(seed=0)
    x = b.input("x", ["batch", 16])
    w1, w2 = b.weight(16, 32, hint="w1"), b.weight(32, 16, hint="w2")
    h = x
    for i in range(3):
        a, c = b.op("Identity", [w1], name=f"tie{i}a"), b.op("Identity", [w2], name=f"tie{i}b")
        f = b.relu(b.op("MatMul", [h, a], name=f"l{i}_fc1"))
        h = b.op("Add", [h, b.op("MatMul", [f, c], name=f"l{i}_fc2")], name=f"l{i}_res")
    return b.build([b.op("MatMul", [h, b.weight(16, 4, hint="head")], name="head")], "tied")


def test_shared_weights_stay_shared(tmp_path):
    model = tied_layers()
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    for ratio in (0.0, 0.5):
        r = prune(src, tmp_path / f"o{ratio}.onnx", ratio=ratio)
        out = onnx.load(str(r.output))
        floats = sum(int(np.prod(i.dims)) for i in out.graph.initializer)
        assert r.params_before == 16 * 32 + 32 * 16 + 16 * 4  # each shared weight once
        assert floats == r.params_after <= r.params_before
        fc1 = {n.input[1] for n in out.graph.node if n.name.endswith("_fc1")}
        assert len(fc1) == 1, fc1  # the three layers still read one weight


def test_weights_stored_as_constant_nodes_count_as_the_inputs_parameters(tmp_path):
    """paddle2onnx writes weights as Constant nodes: they are the input's parameters (the
    written model then has fewer, and no warning says otherwise)."""
    import warnings

    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from onnxprune.api import prune

    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((8, 6)).astype(np.float32), rng.standard_normal((3, 8)).astype(
        np.float32)
    nodes = [helper.make_node("Constant", [], ["w1"], value=numpy_helper.from_array(w1)),
             helper.make_node("Constant", [], ["w2"], value=numpy_helper.from_array(w2)),
             helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1, name="fc1"),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1, name="fc2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["n", 6])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["n", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "more parameters than the input" warning
        r = prune(model, tmp_path / "o.onnx", ratio=0.5)
    assert r.params_input == w1.size + w2.size == r.params_before
    assert r.params_after < r.params_input
