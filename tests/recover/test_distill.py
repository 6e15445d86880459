"""Knowledge distillation (recover.distill) of a pruned digits autoencoder from the original."""

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import onnxprune  # noqa: E402
from onnxprune import progress  # noqa: E402
from onnxprune.errors import UsageError  # noqa: E402
from onnxprune.ir.runtime import session  # noqa: E402
from onnxprune.recover.distill import distill  # noqa: E402
from onnxprune.search.quality import Metric, get_metric  # noqa: E402
from onnxprune.zoo.digits import digits28  # noqa: E402
from onnxprune.zoo.train import export, train_autoencoder  # noqa: E402

PSNR = get_metric("psnr")
RATIO = 0.6
# Measured (5-epoch teacher 25.2 dB): pruned 10.7 dB, 200 steps at lr 1e-2 -> 23.3 dB (+12.6).
STEPS, LR = 200, 1e-2
MIN_GAIN_DB, MIN_PSNR_DB = 8.0, 20.0
OUT = "/decoder/decoder.5/ConvTranspose_output_0"  # the logits: same shape in both graphs
HIDDEN = "/encoder/encoder.1/Relu_output_0"  # pruned channels: not comparable


def _build(tmp_path_factory, epochs):
    ae = train_autoencoder(epochs=epochs)
    path = export(ae.model, tmp_path_factory.mktemp("ae") / "ae.onnx", (1, 28, 28))
    return onnx.load(path), onnxprune.prune(path, ratio=RATIO).model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(teacher, pruned student) from a short-trained autoencoder."""
    return _build(tmp_path_factory, epochs=5)


@pytest.fixture(scope="module")
def images():
    return digits28("train")[0], digits28("test")[0]


def held_out_psnr(model, x):
    return PSNR(session(model).run(None, {"input": x}), {"input": x}, [])


def assert_same_structure(a: onnx.ModelProto, b: onnx.ModelProto):
    ga, gb = a.graph, b.graph
    assert [n.SerializeToString() for n in ga.node] == [n.SerializeToString() for n in gb.node]
    assert [(i.name, tuple(i.dims), i.data_type) for i in ga.initializer] == \
        [(i.name, tuple(i.dims), i.data_type) for i in gb.initializer]
    assert ga.input == gb.input and ga.output == gb.output
    assert a.opset_import == b.opset_import and a.ir_version == b.ir_version


def initializer_bytes(model):
    return {i.name: i.SerializeToString() for i in model.graph.initializer}


def test_distillation_recovers_held_out_psnr(models, images):
    teacher, pruned = models
    x, x_test = images
    model, info = distill(pruned, teacher, {"input": x, "labels": np.zeros(len(x))},
                          metric=PSNR, steps=STEPS, lr=LR)
    before, after = held_out_psnr(pruned, x_test), held_out_psnr(model, x_test)
    assert after >= before + MIN_GAIN_DB and after >= MIN_PSNR_DB, (before, after)
    assert after <= held_out_psnr(teacher, x_test) + 0.5  # the teacher is the ceiling
    assert info["val_after"] >= info["val_before"] + MIN_GAIN_DB
    assert info["history"][0][0] == 0 and info["history"][0][2] == info["val_before"]
    assert info["val_after"] == max(h[2] for h in info["history"])
    assert 0 < info["best_step"] <= info["steps"] == STEPS and info["stopped"] == "budget"
    assert info["trained"] == len(pruned.graph.initializer) - 1  # all but the Reshape target
    onnx.checker.check_model(model, full_check=True)
    assert_same_structure(model, pruned)


def test_too_high_learning_rate_stops_early_with_the_student(models, images):
    teacher, pruned = models
    model, info = distill(pruned, teacher, {"input": images[0]}, metric=PSNR, steps=300, lr=1.0,
                          patience=3)
    assert info["stopped"] in ("patience", "diverged") and info["steps"] < 300
    assert info["best_step"] == 0 and info["val_after"] == info["val_before"]
    assert initializer_bytes(model) == initializer_bytes(pruned)  # nothing beat the student


def test_returns_the_best_validation_weights(models, images):
    """A model metric sees every candidate: the returned weights are the best one's. The
    metric prefers a held-out PSNR of 18 dB, which training passes on its way up (from about
    11 to 22), so the best evaluation is neither the first nor the last whatever rounding
    does to the trajectory."""
    teacher, pruned = models
    x_val = images[1][:200]
    seen = []

    def score(model):
        seen.append((-abs(held_out_psnr(model, x_val) - 18.0), initializer_bytes(model)))
        return seen[-1][0]

    metric = Metric("held-out psnr", True, score, on_model="model")
    model, info = distill(pruned, teacher, {"input": images[0]}, metric=metric, steps=200,
                          lr=0.05, eval_every=10, patience=None)
    values = [v for v, _ in seen]
    best = int(np.argmax(values))
    assert 0 < best < len(values) - 1, values  # the last evaluation was not the best
    assert info["val_after"] == values[best] and info["best_step"] == 10 * best
    assert initializer_bytes(model) == seen[best][1]


def test_deterministic_for_a_seed(models, images):
    teacher, pruned = models
    calib = {"input": images[0][:400]}
    runs = []
    for s, mode in ((3, "off"), (3, "lines"), (4, "off")):  # progress does not change results
        progress.enable(mode)
        try:
            runs.append(distill(pruned, teacher, calib, steps=30, lr=LR, eval_every=10, seed=s))
        finally:
            progress.enable("off")
    (a, ia), (b, ib), (c, _) = runs
    assert a.SerializeToString() == b.SerializeToString()
    assert ia["history"] == ib["history"]
    assert initializer_bytes(a) != initializer_bytes(c)


def test_boundaries_and_the_default_validation_loss(models, images):
    teacher, pruned = models
    model, info = distill(pruned, teacher, {"input": images[0][:400]}, steps=40, lr=LR,
                          eval_every=20, boundaries=[OUT, HIDDEN, "no_such_tensor"])
    assert info["boundaries"] == [OUT] and info["metric"] == "-distill_loss"
    values = [h[2] for h in info["history"]]
    assert all(v < 0 for v in values) and values[-1] > values[0]
    assert_same_structure(model, pruned)


def test_train_selects_initializers(models, images):
    teacher, pruned = models
    model, info = distill(pruned, teacher, {"input": images[0][:200]}, steps=10, lr=LR,
                          train=["decoder.*"])
    before, after = initializer_bytes(pruned), initializer_bytes(model)
    changed = {k for k in before if before[k] != after[k]}
    assert changed and all(k.startswith("decoder.") for k in changed)
    assert info["trained"] == sum(k.startswith("decoder.") for k in before)
    with pytest.raises(UsageError, match="match no"):
        distill(pruned, teacher, {"input": images[0][:50]}, steps=1, train=["nothing*"])


def test_static_batch_student(models, images, tmp_path):
    """A model exported with a fixed batch of 4 trains on batches of exactly 4."""
    from onnxprune.zoo.torch_zoo import export_onnx

    ae = train_autoencoder(epochs=1)
    path = export_onnx(ae.model, tmp_path / "static.onnx", (1, 28, 28), batch=4)
    teacher, pruned = onnx.load(path), onnxprune.prune(path, ratio=RATIO).model
    calib = {"input": images[0][:101]}  # 81 train, 20 validation samples: padded chunks
    model, info = distill(pruned, teacher, calib, metric=PSNR, steps=20, lr=LR, eval_every=10)
    assert info["steps"] == 20 and info["val_after"] > info["val_before"]
    assert_same_structure(model, pruned)


def test_batch_dim_minus_one_is_dynamic(models, images):
    """paddle2onnx writes a dynamic batch as dim_value -1 (PP-OCR's classifier): that is no
    fixed batch (it crashed in np.resize with 'new_shape must be non-negative')."""
    student, teacher = onnx.ModelProto(), onnx.ModelProto()
    student.CopyFrom(models[1])
    teacher.CopyFrom(models[0])
    for graph in (student.graph, teacher.graph):
        for value in list(graph.input) + list(graph.output):
            value.type.tensor_type.shape.dim[0].dim_value = -1
    model, info = distill(student, teacher, {"input": images[0][:40]}, metric=PSNR, steps=2,
                          lr=LR, eval_every=1)
    assert info["steps"] == 2
    assert_same_structure(model, student)


def test_usage_errors(models):
    teacher, pruned = models
    with pytest.raises(UsageError, match="lacks model input"):
        distill(pruned, teacher, {"x": np.zeros((4, 1, 28, 28), np.float32)})
    with pytest.raises(UsageError, match="val_fraction"):
        distill(pruned, teacher, {"input": np.zeros((4, 1, 28, 28), np.float32)},
                val_fraction=1.0)


@pytest.mark.slow
def test_long_distillation_of_a_fully_trained_autoencoder(tmp_path_factory, images):
    """30-epoch teacher (32.0 dB), pruned to 9.2 dB: measured 24.9 dB after 2600 steps
    (early stop; best at 2100), about the pruned network's capacity."""
    teacher, pruned = _build(tmp_path_factory, epochs=30)
    x, x_test = images
    model, info = distill(pruned, teacher, {"input": x}, metric=PSNR, steps=3000, lr=LR,
                          eval_every=50, patience=10)
    before, after = held_out_psnr(pruned, x_test), held_out_psnr(model, x_test)
    assert after >= before + 12.0 and after >= 23.0, (before, after, info["best_step"])
    assert_same_structure(model, pruned)


def test_pow_exponents_and_scalars_do_not_train():
    """A LayerNorm spelled Pow(x - mean, 2) (paddle2onnx, PP-OCR's recognizer): the exponent
    is an initializer, but d(x^e)/de = x^e ln(x) is NaN for negative x; training it made one
    Adam step turn the whole model NaN ('diverged' at step 1). Scalars and Pow exponents stay
    fixed; the weights still train."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "w")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    eps = numpy_helper.from_array(np.array(1e-5, np.float32), "eps")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("ReduceMean", ["h"], ["m"], axes=[-1]),
             helper.make_node("Sub", ["h", "m"], ["c"]),
             helper.make_node("Pow", ["c", "two"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["v"], axes=[-1]),
             helper.make_node("Add", ["v", "eps"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["s"]),
             helper.make_node("Div", ["c", "s"], ["y"])]
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["n", 8])], [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, ["n", 8])], [w, two, eps])
    teacher = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    teacher.ir_version = 8
    student = onnx.ModelProto()
    student.CopyFrom(teacher)
    student.graph.initializer[0].CopyFrom(numpy_helper.from_array(
        rng.normal(size=(8, 8)).astype(np.float32), "w"))
    x = rng.normal(size=(64, 8)).astype(np.float32)
    model, info = distill(student, teacher, {"x": x}, steps=20, lr=1e-2, eval_every=5)
    assert info["stopped"] != "diverged" and info["trained"] == 1
    assert info["val_after"] > info["val_before"]
    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert out["two"] == 2.0 and out["eps"] == np.float32(1e-5)
    assert np.isfinite(session(model).run(None, {"x": x})[0]).all()


def _token_model(vocab=50, width=6, seed=0):
    """ids -> embedding table (Gather) -> MatMul -> Relu -> MatMul: a table and two weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("table", (vocab, width)), ("w1", (width, 8)), ("w2", (8, 3)))]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], axis=0),
             helper.make_node("MatMul", ["e", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(
        nodes, "tokens", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_lookup_tables_stay_as_they_are_by_default():
    """A Gather's table is not trained (a calibration set reads few of its rows); the layers
    after it are, and a pattern naming the table still trains it."""
    teacher, student = _token_model(seed=0), _token_model(seed=1)
    ids = np.random.default_rng(2).integers(0, 50, (40, 4))
    model, info = distill(student, teacher, {"ids": ids}, steps=20, lr=1e-2, patience=None)
    before, after = initializer_bytes(student), initializer_bytes(model)
    assert info["trained"] == 2
    assert after["table"] == before["table"]
    assert after["w1"] != before["w1"] and after["w2"] != before["w2"]
    model, info = distill(student, teacher, {"ids": ids}, steps=20, lr=1e-2, patience=None,
                          train=["table"])
    assert info["trained"] == 1 and initializer_bytes(model)["table"] != before["table"]


def test_training_threads_follow_the_work_of_a_step(monkeypatch):
    from onnxprune.recover import train_device as module

    model = _token_model()
    feeds = {"ids": np.zeros((40, 4), np.int64)}
    macs = 4 * (6 * 8 + 8 * 3)  # per sample: the two MatMuls over 4 tokens
    monkeypatch.setattr(module.os, "sched_getaffinity", lambda _: {0, 1, 2}, raising=False)
    monkeypatch.setattr(module, "PARALLEL_MACS", macs * 32)
    assert module.threads(model, feeds, 32) == 3
    assert module.threads(model, feeds, 31) == 1
    monkeypatch.setattr(module.os, "sched_getaffinity", lambda _: {0}, raising=False)
    assert module.threads(model, feeds, 32) == 1


def test_validation_on_torch_outputs_is_the_deployed_models_metric(models, images):
    """The student is validated on the torch bridge's outputs; the value is onnxruntime's
    metric of the same weights to float rounding (PSNR within 1e-3 dB)."""
    teacher, pruned = models
    x = images[0][:200]
    _, info = distill(pruned, teacher, {"input": x}, metric=PSNR, steps=0, val_fraction=0.0)
    assert info["val_before"] == pytest.approx(held_out_psnr(pruned, x), abs=1e-3)


@pytest.mark.parametrize("samples,every", [(40, 1), (400, 10), (4000, 20)])
def test_validation_comes_once_an_epoch_at_most_every_20_steps(samples, every):
    teacher, student = _token_model(seed=0), _token_model(seed=1)
    ids = np.random.default_rng(2).integers(0, 50, (samples, 4))
    _, info = distill(student, teacher, {"ids": ids}, steps=2 * every, lr=1e-3, patience=None)
    assert [h[0] for h in info["history"]] == [0, every, 2 * every]


def test_a_student_scoring_as_the_teacher_is_not_trained():
    """Nothing to recover (the validation metric already equals the teacher's own): no step
    runs, the weights stay; a student below the teacher trains."""
    teacher = _token_model(seed=0)
    ids = np.random.default_rng(2).integers(0, 50, (40, 4))
    cosine = get_metric("cosine")
    model, info = distill(teacher, teacher, {"ids": ids}, metric=cosine, steps=20, lr=1e-2)
    assert info["stopped"] == "matched" and info["steps"] == 0
    assert initializer_bytes(model) == initializer_bytes(teacher)
    _, info = distill(_token_model(seed=1), teacher, {"ids": ids}, metric=cosine, steps=4,
                      lr=1e-2, patience=None)
    assert info["stopped"] == "budget" and info["steps"] == 4


def test_the_pass_stops_trying_learning_rates_when_nothing_is_lost():
    """Nothing cut, nothing to recover: one try, no step (it once tried three learning rates
    of 20 steps each on a recognizer that compensation had brought back whole)."""
    ids = np.random.default_rng(2).integers(0, 50, (40, 4))
    r = onnxprune.prune(_token_model(seed=0), ratio=0.0, calib={"ids": ids}, metric="cosine",
                        recover="distill", holdout=0.0)
    info = r.recovery["distill"]
    assert info["stopped"] == "matched" and info["tries"] == 1 and info["steps"] == 0


def test_a_student_killed_by_its_learning_rate_stops_at_the_next_validation():
    """The loss jumps far above the first one (a dead student): the run stops as diverged at
    its first validation and gives the student back (it cost PP-OCR det and rec minutes of
    slow, dead steps)."""
    teacher, student = _token_model(seed=0), _token_model(seed=1)
    ids = np.random.default_rng(2).integers(0, 50, (400, 4))
    model, info = distill(student, teacher, {"ids": ids}, steps=100, lr=50.0, eval_every=5,
                          loss="mse")
    assert info["stopped"] == "diverged" and info["steps"] == 5, info["history"]
    assert info["history"][-1][1] > 8 * info["history"][0][1]
    assert initializer_bytes(model) == initializer_bytes(student)


def test_matched_is_the_teachers_metric_to_a_thousandth():
    from onnxprune.recover.distill import _matched

    assert _matched(1.00992, 1.01) and _matched(1.0, 1.0) and _matched(-2.0, -2.001)
    assert not _matched(0.998, 1.0) and not _matched(27.0, 28.0) and not _matched(-2.01, -2.0)


def _student_off_on_a_few_tokens():
    """The teacher's token model with the table rows of tokens 0-4 replaced: fitting those
    five tokens moves the weights every other token reads (where the student was exact)."""
    from onnx import numpy_helper

    teacher = _token_model(seed=0)
    student = onnx.ModelProto()
    student.CopyFrom(teacher)
    table = numpy_helper.to_array(student.graph.initializer[0]).copy()
    table[:5] = np.random.default_rng(9).standard_normal(table[:5].shape)
    student.graph.initializer[0].CopyFrom(numpy_helper.from_array(table, "table"))
    return teacher, student


def test_a_guard_set_keeps_weights_that_only_fit_the_calibration_style():
    teacher, student = _student_off_on_a_few_tokens()
    rng = np.random.default_rng(2)
    calib, guard = {"ids": rng.integers(0, 5, (40, 4))}, {"ids": rng.integers(5, 50, (40, 4))}
    cos = get_metric("cosine")

    def on_guard(model):
        return cos(session(model).run(None, guard), guard, session(teacher).run(None, guard))

    assert on_guard(student) == pytest.approx(1.0)
    free, info = distill(student, teacher, calib, metric=cos, steps=200, lr=5e-2)
    assert info["val_after"] > info["val_before"] + 0.2 and on_guard(free) < 0.9  # learnt 0-4
    kept, info = distill(student, teacher, calib, metric=cos, steps=200, lr=5e-2, guard=guard)
    assert info["guard"] == 16 and info["best_step"] == 0 and info["steps"] < 200  # 16 scored
    assert initializer_bytes(kept) == initializer_bytes(student)


def test_gains_the_guard_keeps_refusing_stop_the_run(monkeypatch):
    """Three refused gains in a row end a run that fits the calibration style only; without
    the rule it ran on to patience."""
    from onnxprune.recover import distill as module

    teacher, student = _student_off_on_a_few_tokens()
    rng = np.random.default_rng(2)
    calib, guard = {"ids": rng.integers(0, 5, (40, 4))}, {"ids": rng.integers(5, 50, (40, 4))}
    cos = get_metric("cosine")
    _, quick = distill(student, teacher, calib, metric=cos, steps=200, lr=5e-2, guard=guard,
                       eval_every=2)
    monkeypatch.setattr(module, "GUARD_PATIENCE", 10**6)
    _, slow = distill(student, teacher, calib, metric=cos, steps=200, lr=5e-2, guard=guard,
                      eval_every=2)
    assert quick["stopped"] == "guard" and quick["steps"] == 6 and quick["best_step"] == 0
    assert slow["stopped"] == "patience" and slow["steps"] >= 20


def test_gains_below_min_gain_keep_their_weights_but_let_patience_stop(monkeypatch):
    from onnxprune.recover import distill as module

    teacher, student = _token_model(seed=0), _token_model(seed=1)
    ids = {"ids": np.random.default_rng(2).integers(0, 50, (40, 4))}
    cos = get_metric("cosine")
    _, full = distill(student, teacher, ids, metric=cos, steps=200, lr=5e-2, patience=3,
                      eval_every=2)
    monkeypatch.setattr(module, "MIN_GAIN", 10.0)  # no gain counts
    _, cut = distill(student, teacher, ids, metric=cos, steps=200, lr=5e-2, patience=3,
                     eval_every=2)
    assert full["steps"] > 40 and cut["stopped"] == "patience" and cut["steps"] == 20
    assert cut["best_step"] == 20 and cut["val_after"] > cut["val_before"]  # weights kept

