"""Distillation's kl loss (recover.distill_data.kl): the distribution over the outputs' last
axis, of the softmax of logits or of the outputs themselves when they are probabilities."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from onnxprune.errors import UsageError  # noqa: E402
from onnxprune.recover.distill import distill  # noqa: E402
from onnxprune.recover.distill_data import kl  # noqa: E402
from onnxprune.search.quality import get_metric  # noqa: E402


def _model(w, softmax: bool):
    """x [n, 4, 8] @ w [8, 16]: logits, or their softmax."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=-1))
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, ["n", 4, 16])],
        [numpy_helper.from_array(w.astype(np.float32), "w")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _distilled(rng, softmax: bool):
    w = rng.normal(size=(8, 16)) * 2
    teacher, student = _model(w, softmax), _model(w + rng.normal(size=w.shape), softmax)
    x = rng.normal(size=(64, 4, 8)).astype(np.float32)
    _, info = distill(student, teacher, {"x": x}, metric=get_metric("kl"), loss="kl",
                      steps=40, lr=3e-2, eval_every=10)
    return (student, teacher, x), info


def test_kl_loss_matches_distributions_not_logits():
    """loss="kl": the student matches the teacher's softmax over the last axis (a shift of
    the logits costs nothing, unlike MSE), and training on it brings the KL metric down."""
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(3, 5, 16)))
    assert float(kl(logits + 7.0, logits)) == pytest.approx(0.0, abs=1e-12)
    assert float(kl(logits.flip(-1), logits)) > 0.1
    (student, teacher, x), info = _distilled(rng, softmax=False)
    assert info["loss"] == "kl" and info["val_after"] < 0.5 * info["val_before"]
    with pytest.raises(UsageError, match="loss"):
        distill(student, teacher, {"x": x}, loss="l1")


def test_kl_loss_of_a_model_ending_in_softmax_is_that_of_its_probabilities():
    """A teacher whose outputs are probabilities (it ends in Softmax): loss="kl" is the KL of
    those probabilities, the value the kl metric reads, and training brings it down."""
    rng = np.random.default_rng(1)
    p = torch.softmax(torch.from_numpy(rng.normal(0, 3, size=(3, 5, 16))), -1)
    q = p.flip(-1)
    want = get_metric("kl")([q.numpy()], {}, [p.numpy()])
    assert float(kl(q, p, probs=True)) == pytest.approx(want, rel=1e-9) and want > 1.0
    _, info = _distilled(rng, softmax=True)
    assert info["history"][0][1] > 0.1  # the softmax of probabilities would read ~0.01
    assert info["val_after"] < 0.5 * info["val_before"]
