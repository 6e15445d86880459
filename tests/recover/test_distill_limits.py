"""Distillation's limits: it stops when the student reaches the teacher's own validation
metric, where nothing is left to gain on it (PP-OCR rec: the teacher's CTC agreement at step
2, then 30 more steps of 3.5 s each before patience ended them); its steps take as many
samples as fit its memory share."""

import numpy as np
import pytest

pytest.importorskip("torch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from onnxprune.recover import distill as distill_module  # noqa: E402
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
    monkeypatch.setattr(distill_module, "STEP_BYTES", step_bytes)
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
    from onnxprune.ir.runtime import session
    from onnxprune.recover import distill_data

    monkeypatch.setattr(distill_data, "CHUNK", 16)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 4))
    teacher, student = _sequence_first(w), _sequence_first(w + 0.5 * rng.standard_normal((5, 4)))
    x = {"x": rng.standard_normal((40, 3, 5)).astype(np.float32)}
    assert distill_data.sample_axes(teacher, ["y"]) == [1]
    got = distill_data.run_ort(session(teacher), x, ["y"], None, 16, [1])[0]
    np.testing.assert_array_equal(got, np.moveaxis(session(teacher).run(None, x)[0], 1, 0))

    def error(model):
        return float(np.abs(session(model).run(None, x)[0] - session(teacher).run(None, x)[0]
                            ).mean())

    model, info = distill(student, teacher, x, metric=get_metric("cosine"), steps=60,
                          lr=5e-2, patience=None, loss="mse")
    assert info["steps"] > 0 and info["val_after"] > info["val_before"]
    assert error(model) < 0.5 * error(student)


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
