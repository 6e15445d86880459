"""Where distillation trains (recover.train_device): the CPU unless torch sees a GPU, a clear
error for a GPU asked for where there is none; on a GPU (where torch sees one) the same losses
as on the CPU and a trained student."""

import json

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


def gpu(test):
    """A test that runs on the GPU (``auto`` too: the suite's CPU default is off for it)."""
    return pytest.mark.gpu(pytest.mark.skipif(cuda is None, reason="needs a CUDA GPU (torch "
                                              "sees none)")(test))


COSINE = get_metric("cosine")


def _weights(model):
    return {i.name: i.SerializeToString() for i in model.graph.initializer}


@no_gpu
def test_without_a_gpu_auto_trains_on_the_cpu(perturbed_cnn):
    teacher, student, x = perturbed_cnn
    kw = dict(metric=COSINE, steps=6, lr=1e-4, patience=None, eval_every=3)
    auto, info = distill(student, teacher, x, **kw)
    cpu, info_cpu = distill(student, teacher, x, device="cpu", **kw)
    assert info["device"] == info_cpu["device"] == "cpu"
    assert _weights(auto) == _weights(cpu) != _weights(student)


@no_gpu
def test_a_gpu_asked_for_without_one_is_a_usage_error(perturbed_cnn):
    teacher, student, x = perturbed_cnn
    with pytest.raises(UsageError, match="sees no CUDA GPU"):
        distill(student, teacher, x, steps=1, device="cuda")


def test_an_unknown_device_is_a_usage_error(perturbed_cnn):
    teacher, student, x = perturbed_cnn
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


def test_a_gpu_out_of_memory_leaves_the_model_as_the_earlier_stages_did(tmp_path, capsys,
                                                                          monkeypatch):
    """Training that does not fit the GPU: a warning, the model written untrained."""
    from onnxprune.recover import distill as module

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\n...")

    monkeypatch.setattr(module, "distill", out_of_memory)
    model = tmp_path / "m.onnx"
    onnx.save(demo_cnn(), model)
    out = tmp_path / "out.onnx"
    code = main(["prune", str(model), "-o", str(out), "--ratio", "0.3", "--calib-random", "8",
                 "--recover", "distill", "--json", "-q"])
    captured = capsys.readouterr()
    assert code == 0 and out.exists()
    assert json.loads(captured.out)["recovery"]["distill"] == {
        "skipped": "the GPU ran out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"}
    assert "distill: not run (the GPU ran out of memory" in captured.err


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_a_gpu_failure_other_than_memory_trains_on_the_cpu_only_under_auto(
        tmp_path, capsys, monkeypatch, device):
    """auto chose the GPU and it cannot train the model (an op without a CUDA kernel): a
    warning and the CPU trains it. A GPU the user named fails as it failed (one line). (The GPU is
    faked: auto resolves to cuda, and training anywhere but the CPU raises.)"""
    from onnxprune.pipeline.passes import recovery
    from onnxprune.recover import distill as module

    real, devices = module.distill, []

    def distill_on(*args, device, **kwargs):
        devices.append(device)
        if device != "cpu":
            raise RuntimeError('"addmm_cuda" not implemented for \'Long\'\nmore lines')
        return real(*args, device=device, **kwargs)

    monkeypatch.setattr(module, "distill", distill_on)
    monkeypatch.setattr(train_device, "AUTO", "cuda")
    monkeypatch.setattr(recovery.Distill, "preflight", lambda self, ctx: None)  # (no GPU here)
    model = tmp_path / "m.onnx"
    onnx.save(demo_cnn(), model)
    out = tmp_path / "out.onnx"
    argv = ["prune", str(model), "-o", str(out), "--ratio", "0.3", "--calib-random", "16",
            "--recover", "distill", "--distill-steps", "2", "--json", "-q",
            "--distill-device", device]
    code = main(argv)
    captured = capsys.readouterr()
    if device == "cuda":  # one line, no file, the internal error's code
        assert code != 0 and devices == ["cuda"] and not out.exists()
        assert "in pass distill: RuntimeError: \"addmm_cuda\" not implemented" in captured.err
        assert "Traceback" not in captured.err
        return
    assert code == 0 and out.exists() and devices == ["auto", "cpu"]
    assert json.loads(captured.out)["recovery"]["distill"]["device"] == "cpu"
    assert "training on the GPU failed (\"addmm_cuda\" not implemented for 'Long'); " \
        "training on the CPU instead" in captured.err


@gpu
def test_on_a_gpu_the_losses_are_the_cpus_and_the_student_trains(perturbed_cnn):
    """The first batch's loss on the GPU (TF32 off) is the CPU's to float rounding; trained
    there, the student's written weights score on onnxruntime what its validation read."""
    teacher, student, x = perturbed_cnn
    kw = dict(metric=COSINE, lr=1e-4, patience=None, eval_every=5)
    _, on_cpu = distill(student, teacher, x, steps=0, device="cpu", **kw)
    with exact_cuda():
        _, first = distill(student, teacher, x, steps=0, device="cuda", **kw)
    assert first["device"].startswith("cuda")
    assert first["history"][0][1] == pytest.approx(on_cpu["history"][0][1], rel=1e-5)
    assert first["val_before"] == pytest.approx(on_cpu["val_before"], abs=1e-6)
    with exact_cuda():
        model, info = distill(student, teacher, x, steps=40, device="cuda", val_fraction=0.0,
                              **kw)
    assert info["val_after"] > info["val_before"] and info["best_step"] > 0
    y = session(model).run(None, x)
    want = session(teacher).run(None, x)
    assert COSINE(y, x, want) == pytest.approx(info["val_after"], abs=1e-4)


@gpu
def test_the_pipeline_trains_on_the_gpu_by_default(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(demo_cnn(), model)
    out = tmp_path / "out.onnx"
    code = main(["prune", str(model), "-o", str(out), "--ratio", "0.3", "--calib-random", "32",
                 "--recover", "distill", "--distill-steps", "4", "--distill-lr", "1e-4",
                 "--json", "-q"])
    assert code == 0 and out.exists()
    assert json.loads(capsys.readouterr().out)["recovery"]["distill"]["device"] == "cuda"


class _FakeGpu:
    """torch.cuda's memory counters for a GPU whose steps allocate ``fixed`` bytes and ``per``
    bytes a sample, ``limit`` samples at most before it runs out of memory."""

    def __init__(self, monkeypatch, free, reserved, allocated, fixed, per, limit=1 << 30):
        self.free, self.reserved, self.allocated = free, reserved, allocated
        self.fixed, self.per, self.limit, self.steps, self.peak = fixed, per, limit, [], 0
        for name in ("synchronize", "reset_peak_memory_stats", "empty_cache"):
            monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (self.free, 80 << 30))
        monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: self.reserved)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a: self.allocated)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: self.peak)

    def loss_of(self, idx):
        self.steps.append(len(idx))
        if len(idx) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        self.peak = self.allocated + self.fixed + self.per * len(idx)
        return torch.zeros((), requires_grad=True)


def test_a_gpu_step_takes_what_half_of_the_gpus_room_holds(monkeypatch):
    """Half of what torch may still take there (free + its cache - in use), less Adam's moments
    and two copies of the best weights, over a sample's bytes measured at the peak of a step of
    8 (after one sample's): the sizes worked out by hand, on the GPU's counters (faked here)."""
    w = torch.nn.Parameter(torch.zeros(1 << 18))  # 1 MiB trained: 4 MiB held beside a step
    gpu_ = _FakeGpu(monkeypatch, free=10 << 30, reserved=2 << 30, allocated=1 << 30,
                    fixed=64 << 20, per=32 << 20)
    room = 0.5 * ((10 << 30) + (2 << 30) - (1 << 30)) - (4 << 20)
    per = ((64 << 20) + 8 * (32 << 20)) // 8  # the fixed bytes shared by the probe's samples
    assert train_device._gpu_fitting(gpu_.loss_of, np.arange(40), [w], torch.device("cuda")) == \
        int(room // per)
    assert gpu_.steps == [1, 8]
    # the GPU runs out of memory above 3 samples: the probe halves to 2
    gpu_ = _FakeGpu(monkeypatch, free=10 << 30, reserved=0, allocated=0, fixed=0,
                    per=32 << 20, limit=3)
    assert train_device._gpu_fitting(gpu_.loss_of, np.arange(40), [w], torch.device("cuda")) == \
        int((0.5 * (10 << 30) - (4 << 20)) // (32 << 20))
    assert gpu_.steps == [1, 8, 4, 2]
    # ... or at one sample: nothing fits, the student is not trained
    gpu_ = _FakeGpu(monkeypatch, free=10 << 30, reserved=0, allocated=0, fixed=0,
                    per=32 << 20, limit=0)
    assert train_device._gpu_fitting(gpu_.loss_of, np.arange(40), [w], torch.device("cuda")) == 0


@gpu
def test_a_gpu_step_is_sized_on_the_gpu(perturbed_cnn):
    """On a real GPU the probe measures a step there: a small model takes the batch asked."""
    teacher, student, x = perturbed_cnn
    _, info = distill(student, teacher, x, steps=2, lr=1e-4, patience=None, device="cuda",
                      batch_size=16)
    assert info["batch_size"] == 16 and info["steps"] == 2 and info["device"] == "cuda"
