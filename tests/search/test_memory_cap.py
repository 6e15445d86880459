"""``--memory`` caps the whole run: working sets take a share of what the cap leaves above the
process's resident memory, fetches and refits take fewer samples, distillation smaller steps
(or none), and a compensated prune stays under the cap, measured from outside the process."""

import subprocess
import sys

import numpy as np
import onnx
import pytest

from onnxprune.ir.memory import current_rss, release
from onnxprune.search import memory
from onnxprune.search.activations import within_cap
from onnxprune.search.memory import MAX_CELLS, cells
from onnxprune.zoo.builder import GraphBuilder


def _conv3d(c: int = 32, d: int = 8, hw: int = 20) -> onnx.ModelProto:
    """A 0.06M-parameter Conv3d model whose activations are large (1 MB a sample a layer)."""
    b = GraphBuilder(seed=0)
    x = b.input("x", ["batch", 4, d, hw, hw])

    def conv3(h, cin, cout, name):
        w = b.weight(cout, cin, 3, 3, 3, hint="w")
        bias = b.const(np.full(cout, 0.05, np.float32), "b")
        return b.op("Conv", [h, w, bias], name=name, kernel_shape=[3, 3, 3], pads=[1] * 6)

    h = b.relu(conv3(x, 4, c, "c1"))
    h = b.relu(conv3(h, c, c, "c2"))
    return b.build([conv3(h, c, 2, "c3")], "conv3d")


def test_room_is_the_default_without_a_cap_and_a_share_of_what_is_left_under_one():
    assert memory.cap() is None
    assert memory.room(123 << 20, 0.25) == 123 << 20
    release()  # what the heap holds freed: room() gives it back before it measures
    held = current_rss()
    with memory.capped(held + (400 << 20)):
        assert memory.cap() == held + (400 << 20)
        got = memory.room(1 << 40, 0.25)
        assert 80 << 20 < got <= 101 << 20  # a quarter of the ~400 MB left
        assert memory.room(10 << 20, 0.25) == 10 << 20  # never more than the default
    with memory.capped(held // 2):  # already over: the floor, not a negative size
        assert memory.room(1 << 40, 0.25) == memory.FLOOR
        assert cells() == memory.FLOOR // 24
    assert memory.cap() is None and cells() == MAX_CELLS


def test_fetches_take_fewer_samples_under_a_cap_and_all_without():
    model = _conv3d()
    calib = {"x": np.random.default_rng(0).standard_normal((200, 4, 8, 20, 20)).astype(np.float32)}
    names = [model.graph.node[1].output[0]]  # the first Relu's output
    assert within_cap(model, names, calib) is calib
    per_sample = 32 * 8 * 20 * 20 * 4  # one sample of the first Relu's output
    release()
    with memory.capped(current_rss() + 3000 * per_sample):  # a tenth: 300 samples' room
        assert len(within_cap(model, names, calib)["x"]) == 200
    release()
    with memory.capped(current_rss() + 800 * per_sample):  # a tenth of it: ~80 samples
        taken = within_cap(model, names, calib)["x"]
    assert 60 <= len(taken) <= 80
    rows = [next(i for i in range(200) if np.array_equal(calib["x"][i], t)) for t in taken]
    assert rows == sorted(set(rows))  # distinct samples of the data, in order


# a fresh parent: its children's peak (the kernel's accounting) is the CLI's alone
_MEASURE = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
            "sys.exit(done.returncode)")


def _peak_of(args: list[str]) -> tuple[int, subprocess.CompletedProcess]:
    """Run the CLI in a child; its peak resident memory as the kernel reports it to a parent."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "onnxprune",
                           "prune", *args], capture_output=True, text=True, timeout=300)
    return int(done.stdout.strip().splitlines()[-1]) * 1024, done


def test_a_compensated_prune_stays_under_the_cap_measured_from_outside(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(_conv3d(), src)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz",
             x=rng.standard_normal((40, 4, 8, 20, 20)).astype(np.float32))
    common = [str(src), "--calib", str(tmp_path / "calib.npz"), "--target-params", "0.3",
              "--compensate"]
    cap = 300 << 20
    capped, done = _peak_of([*common, "-o", str(tmp_path / "capped.onnx"), "--memory", "300M"])
    assert done.returncode == 0, done.stderr
    free, done = _peak_of([*common, "-o", str(tmp_path / "free.onnx")])
    assert done.returncode == 0, done.stderr
    assert free > 1.5 * cap  # without the cap the same run holds far more
    assert capped <= cap, f"peak {capped / 2**20:.0f} MB over --memory 300M"
    assert onnx.load(tmp_path / "capped.onnx").graph.node


def test_distillation_that_cannot_fit_one_sample_is_skipped_with_the_reason():
    pytest.importorskip("torch")
    from onnxprune.recover.distill import distill

    model = _conv3d(c=8, d=4, hw=8)
    calib = {"x": np.random.default_rng(0).standard_normal((12, 4, 4, 8, 8)).astype(np.float32)}
    with memory.capped(current_rss() // 2):  # held already: no training step fits
        _, info = distill(model, model, calib, steps=5, batch_size=4)
    assert info["stopped"] == "memory" and info["steps"] == 0
    _, info = distill(model, model, calib, steps=5, batch_size=4)
    assert info["stopped"] != "memory" and info["steps"] > 0
