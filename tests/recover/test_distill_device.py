"""Where distillation trains (recover.train_device): the CPU unless torch sees a GPU, a clear
error for a GPU asked for where there is none; on a GPU (where torch sees one) the same losses
as on the CPU and a trained student."""

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from device_check import cuda, exact_cuda  # noqa: E402

from onnxprune.cli.main import main  # noqa: E402
from onnxprune.errors import UsageError  # noqa: E402
from onnxprune.ir.runtime import session  # noqa: E402
from onnxprune.recover import train_device  # noqa: E402
from onnxprune.recover.distill import distill  # noqa: E402
from onnxprune.search.quality import get_metric  # noqa: E402
from onnxprune.zoo.builder import demo_cnn  # noqa: E402

no_gpu = pytest.mark.skipif(cuda is not None, reason="torch sees a GPU here")
gpu = pytest.mark.skipif(cuda is None, reason="needs a CUDA GPU (torch sees none)")
COSINE = get_metric("cosine")


@pytest.fixture(scope="module")
def pair():
    """(teacher, student, data): demo_cnn and a copy whose weights are perturbed by 30% of their spread."""
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


def _weights(model):
    return {i.name: i.SerializeToString() for i in model.graph.initializer}


@no_gpu
def test_without_a_gpu_auto_trains_on_the_cpu(pair):
    teacher, student, x = pair
    kw = dict(metric=COSINE, steps=6, lr=1e-4, patience=None, eval_every=3)
    auto, info = distill(student, teacher, x, **kw)
    cpu, info_cpu = distill(student, teacher, x, device="cpu", **kw)
    assert info["device"] == info_cpu["device"] == "cpu"
    assert _weights(auto) == _weights(cpu) != _weights(student)


@no_gpu
def test_a_gpu_asked_for_without_one_is_a_usage_error(pair):
    teacher, student, x = pair
    with pytest.raises(UsageError, match="sees no CUDA GPU"):
        distill(student, teacher, x, steps=1, device="cuda")


def test_an_unknown_device_is_a_usage_error(pair):
    teacher, student, x = pair
    for bad in ("tpu", "mps", "gpu0"):
        with pytest.raises(UsageError, match="device must be one of auto, cpu, cuda"):
            distill(student, teacher, x, steps=1, device=bad)


def test_the_command_line_refuses_a_device_in_one_line(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(demo_cnn(), model)
    out = tmp_path / "out.onnx"
    code = main(["prune", str(model), "-o", str(out), "--ratio", "0.3", "--calib-random", "8",
                 "--recover", "distill", "--distill-device", "gpu"])
    err = capsys.readouterr().err
    assert code != 0 and not out.exists()
    assert "expected auto, cpu, cuda or cuda:N" in err and "Traceback" not in err
    if cuda is None:  # a GPU named where torch sees none: one line, nothing written
        code = main(["prune", str(model), "-o", str(out), "--ratio", "0.3", "--calib-random",
                     "8", "--recover", "distill", "--set", "distill.device=cuda"])
        err = capsys.readouterr().err
        assert code != 0 and not out.exists()
        lines = [line for line in err.splitlines() if line.startswith("onnxprune: error:")]
        assert len(lines) == 1 and "sees no CUDA GPU" in lines[0] and "Traceback" not in err


@gpu
def test_on_a_gpu_the_losses_are_the_cpus_and_the_student_trains(pair):
    """The first batch's loss on the GPU (TF32 off) is the CPU's to float rounding; trained
    there, the student's written weights score on onnxruntime what its validation read."""
    teacher, student, x = pair
    kw = dict(metric=COSINE, lr=1e-4, patience=None, eval_every=5)
    _, on_cpu = distill(student, teacher, x, steps=0, device="cpu", **kw)
    with exact_cuda():
        _, first = distill(student, teacher, x, steps=0, device="cuda", **kw)
    assert first["device"].startswith("cuda")
    assert first["history"][0][1] == pytest.approx(on_cpu["history"][0][1], rel=1e-5)
    assert first["val_before"] == pytest.approx(on_cpu["val_before"], abs=1e-6)
    model, info = distill(student, teacher, x, steps=40, device="cuda", val_fraction=0.0, **kw)
    assert info["val_after"] > info["val_before"] and info["best_step"] > 0
    y = session(model).run(None, x)
    want = session(teacher).run(None, x)
    assert COSINE(y, x, want) == pytest.approx(info["val_after"], abs=1e-4)


@gpu
def test_a_gpu_step_takes_what_half_the_free_gpu_memory_holds(pair):
    teacher, student, x = pair
    _, info = distill(student, teacher, x, steps=2, lr=1e-4, patience=None, device="cuda",
                      batch_size=16)
    assert info["batch_size"] == 16 and info["steps"] == 2
    calls = []

    def loss_of(idx):
        calls.append(len(idx))
        return torch.zeros((), device=cuda, requires_grad=True)

    assert train_device.fitting(loss_of, np.arange(40), [], cuda) >= 1
    assert calls == [1, train_device.PROBE_SAMPLES]
