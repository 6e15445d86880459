"""Loading bad input, writing atomically, IR versions."""

import os

import numpy as np
import onnx
import pytest

from onnxprune.errors import (
    InputMissingError,
    InvalidModelError,
    OutputError,
    UnsupportedModelError,
)
from onnxprune.ir import io
from onnxprune.zoo.builder import demo_cnn


@pytest.fixture
def model_file(demo_file):
    return demo_file


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
    data = sorted(p.name for p in tmp_path.iterdir() if p.name != "big.onnx")
    assert len(data) == 1 and data[0].startswith("big.onnx.") and data[0].endswith(".data")
    back = io.load_model(out)
    a = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    b = {i.name: onnx.numpy_helper.to_array(i) for i in back.graph.initializer}
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _locations(path):
    m = onnx.load(str(path), load_external_data=False)
    return {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}


def test_external_data_pairs_are_never_mixed(tmp_path):
    """Each write names its data file after its contents and commits with the model's rename:
    the model always refers to its own data, and the replaced pair's data file goes away."""
    a, b = demo_cnn(seed=0), demo_cnn(seed=1)
    out = tmp_path / "m.onnx"
    io.save_model(a, out, external_data=True)
    first = _locations(out)
    io.save_model(b, out, external_data=True)
    second = _locations(out)
    assert len(first) == len(second) == 1 and first != second
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.onnx", *second])
    back = io.load_model(out)
    want = {i.name: onnx.numpy_helper.to_array(i) for i in b.graph.initializer}
    assert all(np.array_equal(onnx.numpy_helper.to_array(i), want[i.name])
               for i in back.graph.initializer)


def test_interrupt_before_commit_writes_nothing(tmp_path, monkeypatch):
    from onnxprune import interrupts

    monkeypatch.setattr(interrupts, "_received", [2])
    with pytest.raises(interrupts.Interrupted):
        io.save_model(demo_cnn(), tmp_path / "m.onnx", external_data=True)
    assert list(tmp_path.iterdir()) == []


def test_never_replaces_a_non_regular_file(tmp_path):
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="is a named pipe; refusing to replace it"):
        io.save_model(demo_cnn(), fifo)
    assert fifo.is_fifo()
    folder = tmp_path / "dir.onnx"
    folder.mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        io.save_model(demo_cnn(), folder)
    if os.path.exists("/dev/null"):
        with pytest.raises(OutputError, match="character device"):
            io.output_target("/dev/null")
        assert not os.path.isfile("/dev/null")


def test_symlink_is_written_through(tmp_path):
    target = tmp_path / "real.onnx"
    target.write_bytes(b"old")
    link = tmp_path / "link.onnx"
    link.symlink_to(target)
    io.save_model(demo_cnn(), link)
    assert link.is_symlink() and onnx.load(str(target)).graph.node


def test_unwritable_or_missing_folder(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        io.save_model(demo_cnn(), tmp_path / "no" / "such" / "dir.onnx")
    with pytest.raises(OutputError, match="not writable"):
        io.save_model(demo_cnn(), "/proc/x.onnx")  # a folder no one can create files in


def test_read_only_folder(tmp_path, read_only_dir):
    with pytest.raises(OutputError, match="not writable"):
        io.save_model(demo_cnn(), read_only_dir / "m.onnx")
    assert list(read_only_dir.iterdir()) == []


def test_concurrent_writers_never_mix_pairs(tmp_path):
    """Two writers replacing the same model (with external data) over and over: whatever is
    there at the end is one writer's model with that writer's own weights, whole."""
    import threading

    models = [demo_cnn(seed=0), demo_cnn(seed=1)]
    out = tmp_path / "m.onnx"
    errors = []

    def write(m):
        try:
            for _ in range(6):
                io.save_model(m, out, external_data=True)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    back = {i.name: onnx.numpy_helper.to_array(i) for i in io.load_model(out).graph.initializer}
    matches = [all(np.array_equal(back[i.name], onnx.numpy_helper.to_array(i))
                   for i in m.graph.initializer) for m in models]
    assert sum(matches) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnxprune-")]
