import functools
import importlib.util
import os
import shutil
import subprocess

import numpy as np
import onnx
import pytest

from onnxprune.zoo.builder import GraphBuilder, demo_cnn


@functools.cache
def _torch_sees_a_gpu() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _distillation_on_the_cpu(request, monkeypatch):
    """Where torch sees a GPU, distillation's default (auto) trains there; the tests assert the
    CPU's behaviour (its memory probe, bit-identical reruns), so auto is the CPU in every test
    but those marked gpu."""
    if request.node.get_closest_marker("gpu") is None and _torch_sees_a_gpu():
        from onnxprune.recover import train_device

        monkeypatch.setattr(train_device, "AUTO", "cpu")


@pytest.fixture
def gb():
    return GraphBuilder(seed=0)


def saved(model, path):
    """``model`` written to ``path`` (a test's input file)."""
    import onnx

    onnx.save(model, str(path))
    return path


@pytest.fixture
def demo_file(tmp_path):
    """The demo CNN as a file in the test's folder."""
    from onnxprune.zoo.builder import demo_cnn

    return saved(demo_cnn(), tmp_path / "m.onnx")


def groups_summary(analysis):
    """Sorted (channels, frozen) per group: the structure the tests assert."""
    return sorted((g.channels, g.frozen) for g in analysis.groups)


def group_with_layer(analysis, layer):
    return next(g for g in analysis.groups if layer in g.layers)


def group_of_tensor(analysis, tensor):
    return next(g for g in analysis.groups if any(m.tensor == tensor for m in g.members))


def cbr(b, x, cin, cout, **kw):
    """conv + relu"""
    return b.relu(b.conv(x, cin, cout, **kw))


np.set_printoptions(precision=4)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can create files in: immutable (chattr +i) when running as root, where
    permission bits do not bind, else without write permission."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(
                ["chattr", "+i", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("root without chattr +i: no folder is read-only for this user")
        try:
            yield ro
        finally:
            subprocess.run(["chattr", "-i", str(ro)], check=True)
    else:
        ro.chmod(0o500)
        try:
            yield ro
        finally:
            ro.chmod(0o700)


def residual_convnet(batch="batch", seed=7):
    """Six convolutions with a residual connection over the middle two (live tensors there:
    the skip and the main path) and a second output made early: the prefix and sweep tests'."""
    b = GraphBuilder(seed=seed)
    x = b.input("x", [batch, 3, 10, 10])
    h = b.relu(b.conv(x, 3, 8, name="c1"))
    h = b.relu(b.conv(h, 8, 8, name="c2"))
    early = b.conv(h, 8, 2, k=1, name="early")
    skip = h
    h = b.relu(b.conv(h, 8, 12, name="c3"))
    h = b.conv(h, 12, 8, name="c4")
    h = b.relu(b.op("Add", [h, skip]))
    h = b.relu(b.conv(h, 8, 10, name="c5"))
    y = b.conv(h, 10, 4, name="c6")
    return b.build([y, early])


def convnet(path):
    """A few milliseconds of convolutions (dynamic batch): the latency tests' model."""
    import onnx

    b = GraphBuilder(seed=3)
    x = b.input("img", ["batch", 16, 32, 32])
    for cin, cout in ((16, 64), (64, 64), (64, 96), (96, 64)):
        x = b.relu(b.conv(x, cin, cout))
    onnx.save(b.build([b.op("ReduceMean", [x], axes=[2, 3], keepdims=0)]), str(path))
    return path


@pytest.fixture(scope="module")
def perturbed_cnn():
    """(teacher, student, data) for distillation: demo_cnn and a copy whose weights are
    perturbed by 30% of their spread, with 48 random images."""
    teacher = demo_cnn(seed=0)
    student = onnx.ModelProto()
    student.CopyFrom(teacher)
    rng = np.random.default_rng(1)
    for init in student.graph.initializer:
        w = onnx.numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.ndim > 1:
            noisy = w + 0.3 * w.std() * rng.standard_normal(w.shape).astype(np.float32)
            init.CopyFrom(onnx.numpy_helper.from_array(noisy, init.name))
    x = rng.standard_normal((48, 3, 32, 32)).astype(np.float32)
    return teacher, student, {"image": x}
