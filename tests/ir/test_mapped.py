"""Inline weights read where they lie (``ir.mapped``): the same model as onnx parses, arrays
over the file, and the usual parse whenever the encoding is unusual."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune.errors import InvalidModelError
from onnxprune.ir import io
from onnxprune.ir.mapped import read_mapped
from onnxprune.ir.weights import embed
from onnxprune.zoo.builder import GraphBuilder


def _saved(tmp_path, name="m.onnx") -> tuple[onnx.ModelProto, str]:
    b = GraphBuilder(seed=1)
    x = b.input("x", ["batch", 3, 16, 16])
    h = b.relu(b.conv(x, 3, 64, name="c0"))
    h = b.relu(b.conv(h, 64, 96, name="c1"))  # 221 KB of weights: mapped
    model = b.build([h], "net")
    path = str(tmp_path / name)
    onnx.save(model, path)
    return onnx.load(path), path


def test_the_mapped_model_is_the_parsed_one(tmp_path):
    model, path = _saved(tmp_path)
    bare, arrays = read_mapped(path)
    assert arrays  # the large weight was found
    for i, a in arrays.items():
        t = model.graph.initializer[i]
        np.testing.assert_array_equal(a, numpy_helper.to_array(t))
        assert not a.flags.writeable and not bare.graph.initializer[i].raw_data
    sk = io.load_skeleton(path)
    assert embed(sk).SerializeToString() == model.SerializeToString()


def test_small_models_and_odd_encodings_are_parsed_the_usual_way(tmp_path):
    b = GraphBuilder(seed=0)
    x = b.input("x", [1, 4])
    small = b.build([b.relu(b.gemm(x, 4, 4))], "tiny")
    path = tmp_path / "tiny.onnx"
    onnx.save(small, str(path))
    assert read_mapped(path) is None  # nothing worth mapping
    model, big = _saved(tmp_path)
    doubled = tmp_path / "twice.onnx"  # the graph field given twice: parsers merge them
    extra = onnx.ModelProto()
    extra.graph.doc_string = "merged"
    doubled.write_bytes(open(big, "rb").read() + extra.SerializeToString())
    assert read_mapped(doubled) is None
    sk = io.load_skeleton(doubled)  # parsed, merged, weights copied out once
    assert sk.model.graph.doc_string == "merged" and sk.arrays
    model.graph.doc_string = "merged"
    assert embed(sk).SerializeToString() == model.SerializeToString()
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert read_mapped(empty) is None


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_a_truncated_file_is_one_clear_error(tmp_path, cut):
    _, path = _saved(tmp_path)
    data = open(path, "rb").read()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[: int(len(data) * cut)])
    assert read_mapped(bad) is None
    with pytest.raises(InvalidModelError, match="not a readable ONNX model"):
        io.load_skeleton(bad)


def test_a_large_weight_read_only_inside_a_branch_keeps_its_values(tmp_path):
    """An If branch may read a top-level initializer (outer scope): its constant in the
    branch's graph gets the array too."""
    from onnx import TensorProto, helper

    from onnxprune.api import prune
    from onnxprune.ir.graph import import_model

    rng = np.random.default_rng(0)
    w = rng.standard_normal((128, 160)).astype(np.float32)  # 80 KB: an array of the skeleton
    branch = lambda name, node: helper.make_graph(  # noqa: E731
        [node], name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT,
                                                         ["batch", None])])
    then = branch("then", helper.make_node("MatMul", ["h", "w"], ["then_y"]))
    other = branch("else", helper.make_node("Relu", ["h"], ["else_y"]))
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["h"]),
         helper.make_node("If", ["flag"], ["y"], then_branch=then, else_branch=other)],
        "branchy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 128]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None])],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "branchy.onnx"
    onnx.save(model, str(path))
    sk = io.load_skeleton(path)
    assert "w" in sk.arrays
    g = import_model(sk)
    inner = g.nodes[1].attrs["then_branch"]
    const = next(t for t in inner.tensors().values() if t.name == "w")
    np.testing.assert_array_equal(const.values, w)
    r = prune(str(path), tmp_path / "out.onnx", ratio=0.3)  # nothing to cut; runs and verifies
    assert r.verification.passed
