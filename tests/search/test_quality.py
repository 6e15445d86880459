"""Application metrics and the batched candidate evaluator."""

import numpy as np
import pytest

from onnxprune.analysis.channels import analyze_channels
from onnxprune.errors import UsageError
from onnxprune.ir.graph import import_model
from onnxprune.search import quality
from onnxprune.search.evaluate import Evaluator
from onnxprune.search.quality import get_metric
from onnxprune.testing import normalized
from onnxprune.zoo.builder import GraphBuilder, demo_cnn


def test_psnr_and_mse_known_values():
    x = np.full((2, 1, 4, 4), 0.5, np.float32)
    y = x + np.float32(0.1)  # mse 0.01 -> psnr 20 dB with peak 1
    assert get_metric("mse")([y], {"input": x}, []) == pytest.approx(0.01, rel=1e-5)
    assert get_metric("psnr")([y], {"input": x}, []) == pytest.approx(20.0, abs=1e-4)
    with pytest.raises(UsageError, match="shape"):
        get_metric("psnr")([y[:, :, :2]], {"input": x}, [])


def test_accuracy_cosine_kl():
    logits = np.array([[2.0, 0.1], [0.2, 3.0], [1.0, 0.0]])
    batch = {"x": np.zeros((3, 2), np.float32), "labels": np.array([0, 1, 1])}
    assert get_metric("accuracy")([logits], batch, [logits]) == pytest.approx(2 / 3)
    assert get_metric("cosine")([logits], batch, [logits]) == pytest.approx(1.0)
    assert get_metric("cosine")([-logits], batch, [logits]) == pytest.approx(-1.0)
    assert get_metric("kl")([logits], batch, [logits]) == pytest.approx(0.0, abs=1e-12)
    assert get_metric("kl")([logits[:, ::-1]], batch, [logits]) > 0.5
    with pytest.raises(UsageError, match="labels"):
        get_metric("accuracy")([logits], {"x": batch["x"]}, [logits])
    assert not get_metric("kl").higher_is_better and get_metric("kl").utility(2.0) == -2.0


def test_perplexity_known_values_and_mask():
    vocab = 4
    ids = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    uniform = np.zeros((2, 4, vocab))
    m = get_metric("perplexity")
    assert m([uniform], {"input_ids": ids}, []) == pytest.approx(vocab)  # uniform: ppl = V
    sure = np.full((2, 4, vocab), -30.0)
    sure[:, :-1][np.arange(2)[:, None], np.arange(3), ids[:, 1:]] = 30.0  # always right
    assert m([sure], {"input_ids": ids}, []) == pytest.approx(1.0, abs=1e-6)
    wrong = sure[..., ::-1].copy()  # always confidently wrong: far above the vocabulary size
    assert m([wrong], {"input_ids": ids}, []) > 1e6
    # masked positions do not count: a right first sample, a wrong second one masked away
    mixed = np.concatenate([sure[:1], wrong[1:]])
    mask = np.array([[1, 1, 1, 1], [1, 0, 0, 0]])
    assert m([mixed], {"input_ids": ids, "attention_mask": mask}, []) == pytest.approx(1.0)
    # with a key/value cache the mask covers the past too: its last columns are the tokens'
    past = np.array([[1, 1, 1], [1, 1, 1]])
    assert m([mixed], {"input_ids": ids, "attention_mask": np.hstack([past, mask])},
             []) == pytest.approx(1.0)
    assert m([mixed], {"input_ids": ids, "attention_mask": np.hstack([past, np.ones_like(mask)])},
             []) > 1e3
    assert not m.higher_is_better
    with pytest.raises(UsageError, match="token ids"):
        m([uniform], {"x": ids}, [])
    with pytest.raises(UsageError, match="unmasked"):
        m([uniform], {"input_ids": ids, "attention_mask": np.zeros_like(ids)}, [])


def test_user_metric_from_file(tmp_path):
    f = tmp_path / "mymetric.py"
    f.write_text("def score(outputs, batch):\n    return float(-abs(outputs[0]).mean())\n")
    m = get_metric(f"{f}:score")
    assert m([np.ones((2, 3))], {}, []) == -1.0 and m.higher_is_better
    with pytest.raises(UsageError, match="cannot load"):
        get_metric(f"{f}:nope")
    with pytest.raises(UsageError, match="use one of"):
        get_metric("bogus")


def _reference(batch_dim="batch"):
    b = GraphBuilder(seed=1)
    x = b.input("x", [batch_dim, 3, 8, 8])
    h = b.relu(b.conv(x, 3, 8, name="c1"))
    y = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [b.relu(b.conv(h, 8, 8))])]), 8, 4)
    ref = normalized(b.build([y]))
    return ref, analyze_channels(import_model(ref))


def _evaluator(batch_dim="batch", metric="cosine", n=12):
    ref, analysis = _reference(batch_dim)
    rng = np.random.default_rng(0)
    calib = {"x": rng.standard_normal((n, 3, 8, 8)).astype(np.float32)}
    return Evaluator(ref, analysis, calib, get_metric(metric)), analysis


def test_batched_candidates_equal_one_by_one():
    ev, analysis = _evaluator()
    assert ev.batched and ev.base == pytest.approx(1.0)
    masks = (np.random.default_rng(1).random((7, analysis.num_units)) > 0.4).astype(np.float32)
    batched = ev.evaluate_many(masks)
    ev.batched = False
    one_by_one = ev.evaluate_many(masks)
    assert np.allclose(batched, one_by_one, atol=1e-6)
    assert ev.evals == 14
    assert np.all(batched < 1.0)  # closing channels changes the outputs


def test_static_batch_model_is_evaluated_in_chunks():
    ev, analysis = _evaluator(batch_dim=4, n=10)  # 10 samples through a batch-4 model
    assert not ev.batched and ev.static_batch == 4
    assert ev.reference[0].shape[0] == 10
    assert ev.evaluate(np.ones(analysis.num_units)) == pytest.approx(1.0)


def test_calibration_must_cover_the_inputs():
    b = GraphBuilder()
    x = b.input("x", ["batch", 4])
    ref = normalized(b.build([b.gemm(b.relu(b.gemm(x, 4, 6)), 6, 2)]))
    analysis = analyze_channels(import_model(ref))
    with pytest.raises(UsageError, match="lacks model input"):
        Evaluator(ref, analysis, {"y": np.zeros((3, 4), np.float32)}, get_metric("cosine"))
    with pytest.raises(UsageError, match="differ in length"):
        Evaluator(ref, analysis, {"x": np.zeros((3, 4), np.float32), "labels": np.zeros(2)},
                  get_metric("cosine"))


def test_demo_model_runs_through_the_evaluator():
    ref = normalized(demo_cnn())
    analysis = analyze_channels(import_model(ref))
    calib = {"image": np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)}
    ev = Evaluator(ref, analysis, calib, get_metric("kl"))
    assert ev.base == pytest.approx(0.0, abs=1e-9)
    closed = np.ones(analysis.num_units)
    closed[analysis.groups[0].units[:16]] = 0
    assert ev.evaluate(closed) > 0.0


def test_model_metrics_judge_the_gated_model_itself(tmp_path):
    f = tmp_path / "loop.py"
    f.write_text(
        "import numpy as np, onnxruntime as ort\n"
        "def by_run(run):\n"
        "    return float(run({'x': np.ones((1, 3, 8, 8), np.float32)})[0].sum())\n"
        "def by_model(model):\n"
        "    s = ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])\n"
        "    return float(s.run(None, {'x': np.ones((1, 3, 8, 8), np.float32)})[0].sum())\n"
    )
    ref, analysis = _reference()
    run_metric, model_metric = get_metric(f"{f}:by_run"), get_metric(f"{f}:by_model")
    assert run_metric.on_model == "run" and model_metric.on_model == "model"
    by_run = Evaluator(ref, analysis, None, run_metric)
    by_model = Evaluator(ref, analysis, None, model_metric)
    masks = (np.random.default_rng(2).random((3, analysis.num_units)) > 0.5).astype(np.float32)
    a, b = by_run.evaluate_many(masks), by_model.evaluate_many(masks)
    assert np.allclose(a, b, rtol=1e-5) and len(set(np.round(a, 4))) == 3
    assert by_run.base == pytest.approx(by_model.base, rel=1e-6)


def test_kl_compares_probabilities_as_they_are():
    """A model ending in Softmax: kl is the KL of its outputs, not of their softmax (which
    flattens every row towards uniform and hides a changed answer)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (8, 5, 30))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = (p / p.sum(-1, keepdims=True)).astype(np.float32)
    q = p[..., ::-1].copy()
    want = float(np.mean((p.astype(np.float64) * (np.log(p.astype(np.float64)) -
                                                  np.log(q.astype(np.float64)))).sum(-1)))
    got = get_metric("kl")([q], {}, [p])
    assert got == pytest.approx(want, rel=1e-9)
    # a softmax over the probabilities reads them almost equal (the reading before)
    lp, lq = (x - np.log(np.exp(x).sum(-1, keepdims=True)) for x in (p.astype(np.float64),
                                                                     q.astype(np.float64)))
    assert got > 100 * float(np.mean((np.exp(lp) * (lp - lq)).sum(-1)))
    assert get_metric("kl")([p], {}, [p]) == pytest.approx(0.0, abs=1e-12)
    assert quality.is_distribution(p) and not quality.is_distribution(logits)
    assert not quality.is_distribution(np.abs(logits))  # non-negative, rows not summing to 1
