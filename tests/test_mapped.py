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
