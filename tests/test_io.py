"""Loading bad input, writing atomically, IR versions."""

import os

import numpy as np
import onnx
import pytest

from onnxprune import io
from onnxprune.errors import (
    InputMissingError,
    InvalidModelError,
    OutputError,
    UnsupportedModelError,
)
from onnxprune.zoo.builder import demo_cnn


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(demo_cnn(), str(path))
    return path


def test_missing_and_directory(tmp_path):
    with pytest.raises(InputMissingError, match="no such file"):
        io.load_model(tmp_path / "nope.onnx")
    with pytest.raises(InputMissingError, match="is a directory"):
        io.load_model(tmp_path)


def test_garbage_and_truncated(tmp_path, model_file):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\xffnot a model at all")
    with pytest.raises(InvalidModelError, match="not a readable ONNX model|no graph nodes"):
        io.load_model(bad)
    cut = tmp_path / "cut.onnx"
    data = model_file.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModelError):
        io.load_model(cut)


def test_unsupported_opset_and_ir(tmp_path):
    m = demo_cnn()
    m.opset_import[0].version = 99
    onnx.save(m, str(tmp_path / "o.onnx"))
    with pytest.raises(UnsupportedModelError, match="opset 99"):
        io.load_model(tmp_path / "o.onnx")
    m = demo_cnn()
    m.ir_version = 99
    onnx.save(m, str(tmp_path / "i.onnx"))
    with pytest.raises(UnsupportedModelError, match="IR version 99"):
        io.load_model(tmp_path / "i.onnx")


def test_missing_external_data(tmp_path):
    m = demo_cnn()
    onnx.save(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.data",
              size_threshold=0)
    os.remove(tmp_path / "ext.data")
    with pytest.raises(InvalidModelError, match="external data"):
        io.load_model(tmp_path / "ext.onnx")


def test_save_is_atomic_and_runtime_loadable(tmp_path):
    m = demo_cnn()
    m.ir_version = 14  # what onnx 1.23 writes by default; onnxruntime 1.31 rejects it
    out = io.save_model(m, tmp_path / "out.onnx", source_ir=14)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]  # no temp leftovers
    assert onnx.load(str(out)).ir_version == 13
    import onnxruntime as ort

    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def test_save_keeps_older_ir(tmp_path):
    out = io.save_model(demo_cnn(), tmp_path / "o.onnx", source_ir=8)
    assert onnx.load(str(out)).ir_version == 8


def test_external_data_round_trip(tmp_path):
    m = demo_cnn()
    out = io.save_model(m, tmp_path / "big.onnx", external_data=True)
    assert (tmp_path / "big.onnx.data").exists()
    back = io.load_model(out)
    a = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    b = {i.name: onnx.numpy_helper.to_array(i) for i in back.graph.initializer}
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_unwritable_or_missing_folder(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        io.save_model(demo_cnn(), tmp_path / "no" / "such" / "dir.onnx")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that can write anywhere")
        with pytest.raises(OutputError, match="not writable"):
            io.save_model(demo_cnn(), ro / "m.onnx")
    finally:
        ro.chmod(0o700)
