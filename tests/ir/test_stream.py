"""Models written from their arrays (``ir.stream``) are the models ``embed`` builds, byte for
byte once parsed, inline or with external data; the weights are never copied to write them."""

import numpy as np
import onnx

from onnxprune.ir import io, stream
from onnxprune.ir.graph import export_skeleton, import_model
from onnxprune.ir.weights import EXTERNAL_BYTES, embed, to_skeleton
from onnxprune.zoo.builder import GraphBuilder


def _model() -> onnx.ModelProto:
    b = GraphBuilder(seed=3)
    x = b.input("x", ["batch", 300])
    h = b.relu(b.gemm(x, 300, 200, name="fc0"))  # 240 KB of weights: written from its array
    h = b.gemm(h, 200, 7, name="fc1")  # 5.6 KB: stays in the proto
    model = b.build([h], "mlp")
    model.metadata_props.add(key="labels", value="a,b,c")
    model.doc_string = "two layers"
    return model


def test_an_inline_model_parses_to_the_embedded_one(tmp_path):
    model = _model()
    sk = to_skeleton(model)
    assert sk.arrays and all(a.nbytes >= EXTERNAL_BYTES for a in sk.arrays.values())
    path = tmp_path / "m.onnx"
    with open(path, "wb") as fh:
        stream.write_inline(sk, fh)
    written = onnx.load(str(path))
    assert written.SerializeToString() == embed(sk).SerializeToString()
    assert written.SerializeToString() == model.SerializeToString()  # nothing lost on the way


def test_save_model_writes_a_graphs_skeleton_like_its_export(tmp_path):
    graph = import_model(to_skeleton(_model()))
    sk = export_skeleton(graph)
    a = io.save_model(sk, tmp_path / "a.onnx")
    b = io.save_model(embed(sk), tmp_path / "b.onnx")
    assert a.read_bytes() != b"" and onnx.load(str(a)) == onnx.load(str(b))
    onnx.checker.check_model(str(a), full_check=True)


def test_external_data_holds_the_arrays_where_the_proto_says(tmp_path):
    model = _model()
    sk = to_skeleton(model)
    out = io.save_model(sk, tmp_path / "m.onnx", external_data=True)
    data = [p for p in tmp_path.iterdir() if p.suffix == ".data"]
    assert len(data) == 1 and data[0].name.startswith("m.onnx.")
    loaded = onnx.load(str(out))  # onnx reads the data file itself
    model.ir_version = loaded.ir_version  # (save_model writes what onnxruntime loads)
    for t in loaded.graph.initializer:
        t.ClearField("data_location")  # onnx's loader sets it to DEFAULT
    assert loaded.SerializeToString() == model.SerializeToString()
    back = io.load_skeleton(out)  # and onnxprune maps it
    for name, a in sk.arrays.items():
        np.testing.assert_array_equal(back.arrays[name], a)
        assert not back.arrays[name].flags.writeable


def test_the_digest_follows_the_weights():
    sk = to_skeleton(_model())
    other = to_skeleton(_model())
    assert stream.digest(sk) == stream.digest(other)
    name = next(iter(other.arrays))
    changed = other.arrays[name].copy()
    changed.flat[0] += 1
    other.arrays[name] = changed
    assert stream.digest(sk) != stream.digest(other)
