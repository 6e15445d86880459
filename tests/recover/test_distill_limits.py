"""Distillation's limits: it stops when the student reaches the teacher's own validation
metric, where nothing is left to gain on it (PP-OCR rec: the teacher's CTC agreement at step
2, then 30 more steps of 3.5 s each before patience ended them); its steps take as many
samples as fit its memory share."""

import numpy as np
import pytest

pytest.importorskip("torch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from onnxprune.recover import distill as distill_module  # noqa: E402
from onnxprune.recover import train_device  # noqa: E402
from onnxprune.recover.distill import MATCHED, distill  # noqa: E402
from onnxprune.search.quality import get_metric  # noqa: E402


def _linear(w):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(w.astype(np.float32), "w")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4))
    x = {"x": rng.standard_normal((200, 8)).astype(np.float32)}
    return _linear(w), _linear(w + 0.3 * rng.standard_normal((8, 4))), x


def test_training_stops_at_the_teachers_metric(pair):
    """The student starts below the teacher's cosine (1.0) by more than MATCHED, reaches it
    within MATCHED after some steps, and the run stops there, far before its budget."""
    teacher, student, x = pair
    _, info = distill(student, teacher, x, metric=get_metric("cosine"), steps=400, lr=5e-2,
                      eval_every=2, patience=None, loss="mse")
    assert info["val_before"] < 1.0 - MATCHED
    assert info["stopped"] == "matched", info["history"]
    assert 0 < info["steps"] < 400 and info["val_after"] >= 1.0 - MATCHED
    # one evaluation before, it had not reached it
    assert info["history"][-2][2] < 1.0 - MATCHED


def test_a_teacher_scoring_infinity_is_never_matched():
    """A metric whose teacher scores infinity against itself (a PSNR against the teacher's
    outputs) has no ceiling: never matched, and no invalid arithmetic on the way."""
    from onnxprune.recover.distill import _matched

    with np.errstate(all="raise"):
        assert not _matched(np.float64(80.0), np.float64(np.inf))
        assert _matched(np.float64(1.0), np.float64(1.0))


@pytest.mark.parametrize("step_bytes,want", [(1, 1), (1 << 40, 32)])
def test_a_step_takes_the_samples_its_memory_share_holds(pair, monkeypatch, step_bytes, want):
    """Without --memory, a step takes as many samples as STEP_BYTES holds at one sample's
    measured cost (at least one, at most the batch asked for)."""
    teacher, student, x = pair
    monkeypatch.setattr(train_device, "STEP_BYTES", step_bytes)
    _, info = distill(student, teacher, x, steps=4, lr=1e-3, patience=None, loss="mse")
    assert info["batch_size"] == want and info["steps"] == 4


def _sequence_first(w):
    """x [n, 3, 5] -> Transpose -> [3, n, 5] @ w: y [3, n, 4], its samples on axis 1 (a CTC
    recognizer's layout: time, batch, classes)."""
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
         helper.make_node("MatMul", ["t", "w"], ["y"])], "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, "n", 4])],
        [numpy_helper.from_array(w.astype(np.float32), "w")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_an_output_with_its_samples_second_is_distilled(monkeypatch):
    """A sequence-first output: the teacher's outputs are gathered along its sample axis (in
    chunks of 16 here), the student's compared sample by sample, and the run brings the
    student closer to the teacher (it once stopped with 'teacher shape (26, 37), student (1,
    37)': the samples taken from the time axis)."""
    from onnxprune.ir.runtime import output_axes, session
    from onnxprune.recover import distill_data

    monkeypatch.setattr(distill_data, "CHUNK", 16)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 4))
    teacher, student = _sequence_first(w), _sequence_first(w + 0.5 * rng.standard_normal((5, 4)))
    x = {"x": rng.standard_normal((40, 3, 5)).astype(np.float32)}
    assert output_axes(teacher, ["y"]) == [1]
    got = distill_data.run_ort(session(teacher), x, ["y"], None, 16, [1])[0]
    np.testing.assert_array_equal(got, np.moveaxis(session(teacher).run(None, x)[0], 1, 0))

    def error(model):
        return float(np.abs(session(model).run(None, x)[0] - session(teacher).run(None, x)[0]
                            ).mean())

    model, info = distill(student, teacher, x, metric=get_metric("cosine"), steps=60,
                          lr=5e-2, patience=None, loss="mse")
    assert info["steps"] > 0 and info["val_after"] > info["val_before"]
    assert error(model) < 0.5 * error(student)
    # the teacher's outputs given as the model gives them ([time, batch, classes]): the same run
    held = {"y": session(teacher).run(None, x)[0]}
    _, again = distill(student, teacher, x, metric=get_metric("cosine"), steps=60, lr=5e-2,
                       patience=None, loss="mse", teacher_outputs=held)
    assert again["history"] == info["history"]
    _, off = distill(student, teacher, x, metric=get_metric("cosine"), steps=2, lr=5e-2,
                     patience=None, loss="mse", teacher_outputs={"y": -held["y"]})
    assert off["history"][0][1] > 2 * info["history"][0][1]  # what it was given: its targets


def test_learning_rates_in_turn_are_each_the_run_alone(pair, monkeypatch):
    """Rates tried in turn share the set-up: a rate that diverges gives way to the next, which
    starts from the student's own weights on the same mini-batches, and ends exactly where a
    run at that rate alone ends; a rate that gains stops the back-off. The teacher's outputs
    are computed once for all tries."""
    from onnxprune.recover import distill_data

    teacher, student, x = pair
    made = []
    real = distill_data.Targets.__init__
    monkeypatch.setattr(distill_module.Targets, "__init__",
                        lambda self, *a, **k: made.append(1) or real(self, *a, **k))
    cosine = get_metric("cosine")
    kw = {"metric": cosine, "steps": 30, "batch_size": 16, "patience": None}
    alone, info_alone = distill(student, teacher, x, lr=1e-2, **kw)
    made.clear()
    both, info = distill(student, teacher, x, lr=[1e4, 1e-2], **kw)
    assert len(made) == 1 and info["tries"] == 2 and info["lr"] == 1e-2
    assert info_alone["val_after"] > info_alone["val_before"]  # the second rate gains
    assert info["history"] == info_alone["history"] and info["steps"] == info_alone["steps"]
    assert [i.SerializeToString() for i in both.graph.initializer] == \
        [i.SerializeToString() for i in alone.graph.initializer]
    _, info = distill(student, teacher, x, lr=[1e-2, 1e-3], **kw)
    assert info["tries"] == 1 and info["lr"] == 1e-2  # it gained: no lower rate tried


@pytest.mark.parametrize("step_bytes,probe", [(1, 1), (1 << 40, 8)])
def test_the_memory_probe_stays_within_the_steps_bytes(pair, monkeypatch, step_bytes, probe):
    """The probe that sizes a step runs one sample, then PROBE_SAMPLES, or fewer where the
    first says they would pass STEP_BYTES (8 long text lines added 0.7 GB); every inference
    after it runs in chunks of as many samples as a step's bytes hold at most."""
    teacher, student, x = pair
    seen = []
    loss = distill_module.Data.loss

    def recording(self, idx, valid=None):
        seen.append(len(idx))
        return loss(self, idx, valid)

    rows = []
    run = distill_module.TorchGraph.run

    def running(self, feeds, names=None):
        rows.append(len(next(iter(feeds.values()))))
        return run(self, feeds, names)

    monkeypatch.setattr(distill_module.Data, "loss", recording)
    monkeypatch.setattr(distill_module.TorchGraph, "run", running)
    monkeypatch.setattr(train_device, "STEP_BYTES", step_bytes)
    _, info = distill(student, teacher, x, metric=get_metric("cosine"), steps=2, lr=1e-3,
                      patience=None, loss="mse", eval_every=1)
    assert seen[:2] == [1, probe]
    at = rows.index(40)  # the validation split at once, before the probe
    assert rows[at + 1:at + 3] == [1, probe]
    after = rows[at + 3:]  # every run after the probe
    # one sample a step: inference one at a time too; otherwise as many as fit (all 40)
    assert info["batch_size"] == (1 if step_bytes == 1 else 32)
    assert after and max(after) == (1 if step_bytes == 1 else 40)


def test_the_teachers_outputs_given_are_its_targets(pair, monkeypatch):
    """Outputs the caller holds (the run's reference outputs) are the targets, the teacher
    not run: the same run as with the teacher's own; outputs of other rows are not used."""
    teacher, student, x = pair
    from onnxprune.ir.runtime import session

    held = {"y": session(teacher).run(None, x)[0]}
    runs = []
    real = distill_module.Targets.__init__.__globals__["run_ort"]

    def counting(*a, **k):
        runs.append(1)
        return real(*a, **k)

    monkeypatch.setitem(distill_module.Targets.__init__.__globals__, "run_ort", counting)
    common = dict(metric=get_metric("cosine"), steps=6, lr=1e-2, patience=None, loss="mse",
                  eval_every=2)
    _, own = distill(student, teacher, x, **common)
    assert len(runs) == 1
    _, given = distill(student, teacher, x, teacher_outputs=held, **common)
    assert len(runs) == 1  # not run again
    assert given["history"] == own["history"] and given["val_after"] == own["val_after"]
    _, other = distill(student, teacher, x, teacher_outputs={"y": held["y"][:10]}, **common)
    assert len(runs) == 2 and other["history"] == own["history"]
    # a wrong array given is what it trains on: the outputs given are truly the targets
    _, wrong = distill(student, teacher, x, teacher_outputs={"y": -held["y"]}, **common)
    assert wrong["history"][0][1] > 10 * own["history"][0][1]


def test_variance_taken_in_pieces_is_the_whole_arrays(monkeypatch):
    """The loss's scale is the targets' variance on the training samples, in float64 a few
    samples at a time: the same as over the copy of them all to 1e-12."""
    import torch

    from onnxprune.recover import distill_data

    t = torch.from_numpy(np.random.default_rng(1).standard_normal((37, 5, 9)) * 3 + 2)
    idx = np.random.default_rng(2).permutation(37)[:29]
    whole = float(t[idx].double().var(unbiased=False))
    monkeypatch.setattr(distill_data, "VARIANCE_ROWS_BYTES", 8 * 45 * 4)  # 4 samples a piece
    assert distill_data.variance(t, idx) == pytest.approx(whole, rel=1e-12)
    assert distill_data.variance(torch.ones(6, 2)) == 1.0  # constant: plain MSE


def test_a_step_on_all_its_rows_slices_nothing(pair):
    """A slice of all rows (``g[:None]``) made backward zero-fill a gradient of the output's
    size and copy it (PP-OCR rec: 48 MB each step); the loss of the first rows is a slice."""
    import torch

    from onnxprune.recover.distill_data import Data, Targets
    from onnxprune.recover.torch_bridge import TorchGraph

    student, teacher, x = pair
    graph = TorchGraph(student)
    idx = np.arange(len(x["x"]))
    data = Data(graph, x, Targets(teacher, x, graph, (), idx, None), 0.1, None, "mse")

    def nodes(loss):
        seen, todo = set(), [loss.grad_fn]
        while todo:
            fn = todo.pop()
            if fn is not None and fn not in seen:
                seen.add(fn)
                todo += [f for f, _ in fn.next_functions]
        return {type(fn).__name__ for fn in seen}

    whole = data.loss(idx[:8])
    assert "SliceBackward0" not in nodes(whole)
    first = data.loss(idx[:8], valid=5)
    assert "SliceBackward0" in nodes(first)
    assert torch.isclose(first, data.loss(idx[:5]), rtol=1e-6)
