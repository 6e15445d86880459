"""A training step's precision (``distill(precision=...)``, ``--set distill.precision``):
float32 by default; bf16 runs each step's forward pass under torch's autocast to bfloat16,
where the device has bfloat16 arithmetic, and keeps the weights, losses and validation
float32. Where the CPU has none, the tests say it has (torch emulates bfloat16 there: the
same numbers, slower)."""

import json
import warnings

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from device_check import cuda  # noqa: E402

from onnxprune.api import prune  # noqa: E402
from onnxprune.cli.main import main  # noqa: E402
from onnxprune.errors import OnnxPruneWarning, UsageError  # noqa: E402
from onnxprune.recover import train_device  # noqa: E402
from onnxprune.recover.distill import distill  # noqa: E402
from onnxprune.zoo.builder import demo_cnn  # noqa: E402

# bfloat16 keeps 8 bits of a product's inputs (a relative rounding of 2^-9 each); summed in
# float32 over a layer's inputs the outputs move by well under 1% of their size, and the
# loss, a mean of squared output differences, by a few times that: 3% bounds it with room
# (measured on this perturbed_cnn: 0.5%), where a step that lost its autocast or computed its loss
# on bfloat16 targets would still pass but a wrong loss (another batch, another scale) not
LOSS_TOLERANCE = 0.03


@pytest.fixture
def bf16_cpu(monkeypatch):
    """The CPU counts as one with bfloat16 arithmetic."""
    monkeypatch.setattr(train_device, "native_bf16", lambda device: True)


def _weights(model):
    return {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}


KW = dict(steps=8, lr=1e-4, patience=None, eval_every=1, device="cpu")


def test_bf16_steps_lose_what_float32_steps_do_to_rounding_and_train(perturbed_cnn, bf16_cpu):
    teacher, student, x = perturbed_cnn
    with warnings.catch_warnings():
        warnings.simplefilter("error", OnnxPruneWarning)  # (nothing to say: it has bfloat16)
        full, info32 = distill(student, teacher, x, **KW)
        half, info16 = distill(student, teacher, x, precision="bf16", **KW)
    assert info32["precision"] == "fp32" and info16["precision"] == "bf16"
    # step 0: the loss before training (float32 in both); step 1: the first step's own loss,
    # on the same mini-batch from the same weights
    assert info16["history"][0][1] == info32["history"][0][1]
    first32, first16 = info32["history"][1][1], info16["history"][1][1]
    assert first16 != first32  # (the products did run in bfloat16)
    assert abs(first16 - first32) <= LOSS_TOLERANCE * first32
    # both train: the validation loss (float32) falls by much more than the rounding
    for info in (info32, info16):
        assert info["val_after"] > info["val_before"] + 0.2 * abs(info["val_before"])
    # the written weights are float32, of the same names and shapes, and trained
    w16, w32, w0 = _weights(half), _weights(full), _weights(student)
    assert w16.keys() == w0.keys()
    for name, w in w16.items():
        assert w.dtype == w0[name].dtype and w.shape == w0[name].shape
    moved = [n for n in w0 if w0[n].dtype == np.float32 and w0[n].ndim > 1]
    assert all(not np.array_equal(w16[n], w0[n]) for n in moved)
    # ... along the float32 run's path: each trained layer moved the same way
    for n in moved:
        d16, d32 = (w16[n] - w0[n]).ravel(), (w32[n] - w0[n]).ravel()
        cos = d16 @ d32 / (np.linalg.norm(d16) * np.linalg.norm(d32))
        assert cos > 0.9, n


def test_bf16_on_a_cpu_without_it_trains_in_float32_and_says_so(perturbed_cnn, monkeypatch):
    monkeypatch.setattr(train_device, "native_bf16", lambda device: False)
    teacher, student, x = perturbed_cnn
    full, info32 = distill(student, teacher, x, **KW)
    with pytest.warns(OnnxPruneWarning, match="precision bf16 asked for, but this CPU has no "
                                             "AVX512-BF16 or AMX: training in fp32"):
        same, info = distill(student, teacher, x, precision="bf16", **KW)
    assert info["precision"] == "fp32"
    got, want = _weights(same), _weights(full)
    assert all(np.array_equal(got[n], want[n]) for n in want)  # the float32 run, bit for bit


def test_an_unknown_precision_is_a_usage_error(perturbed_cnn):
    teacher, student, x = perturbed_cnn
    for bad in ("fp16", "bfloat16", "half"):
        with pytest.raises(UsageError, match="precision must be one of fp32, bf16"):
            distill(student, teacher, x, steps=1, precision=bad)


def test_the_pipeline_and_the_command_line_take_the_precision(tmp_path, capsys, bf16_cpu):
    model = tmp_path / "m.onnx"
    onnx.save(demo_cnn(), model)
    x = {"image": np.random.default_rng(0).standard_normal((24, 3, 32, 32)).astype(np.float32)}
    r = prune(model, tmp_path / "api.onnx", ratio=0.3, calib=x, recover="distill",
              distill_steps=4, distill_precision="bf16")
    assert r.recovery["distill"]["precision"] == "bf16"
    out = tmp_path / "cli.onnx"
    code = main(["prune", str(model), "-o", str(out), "--ratio", "0.3", "--calib-random", "16",
                 "--recover", "distill", "--set", "distill.steps=4",
                 "--set", "distill.precision=bf16", "--json"])
    assert code == 0 and out.exists()
    assert json.loads(capsys.readouterr().out)["recovery"]["distill"]["precision"] == "bf16"
    bad = tmp_path / "bad.onnx"
    code = main(["prune", str(model), "-o", str(bad), "--ratio", "0.3", "--calib-random", "16",
                 "--recover", "distill", "--set", "distill.precision=fp16"])
    err = capsys.readouterr().err
    assert code != 0 and not bad.exists() and "Traceback" not in err
    assert "fp16" in err and "fp32" in err and "bf16" in err


@pytest.mark.gpu
@pytest.mark.skipif(cuda is None or not train_device.native_bf16(cuda),
                    reason="needs a CUDA GPU with bfloat16 (torch sees none)")
def test_bf16_on_a_gpu_trains(perturbed_cnn):
    teacher, student, x = perturbed_cnn
    kw = {**KW, "device": "cuda"}
    _, info32 = distill(student, teacher, x, **kw)
    _, info16 = distill(student, teacher, x, precision="bf16", **kw)
    assert info16["precision"] == "bf16" and info16["device"].startswith("cuda")
    first32, first16 = info32["history"][1][1], info16["history"][1][1]
    assert abs(first16 - first32) <= LOSS_TOLERANCE * first32
    assert info16["val_after"] > info16["val_before"] + 0.2 * abs(info16["val_before"])
