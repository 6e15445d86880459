"""The memory budget of candidate evaluation: sizes parsed, activation bytes inferred, calls
chunked to fit (with the same scores), and a budget that cannot hold one sample refused."""

import numpy as np
import pytest

from onnxprune.analysis.channels import analyze_channels
from onnxprune.api import prune
from onnxprune.errors import UsageError
from onnxprune.ir.graph import import_model
from onnxprune.search import memory
from onnxprune.search.evaluate import MAX_ROWS, Evaluator
from onnxprune.search.quality import get_metric
from onnxprune.zoo.builder import GraphBuilder


def _mlp():
    b = GraphBuilder(seed=0)
    x = b.input("x", ["batch", 12])
    h = b.op("Relu", [b.gemm(x, 12, 32, name="fc1")])
    return b.build([b.gemm(h, 32, 6, name="fc2")])


@pytest.mark.parametrize("text, value", [("4G", 4 << 30), ("512M", 512 << 20),
                                         ("1.5GB", int(1.5 * (1 << 30))), ("2gib", 2 << 30),
                                         (3 << 20, 3 << 20)])
def test_sizes_parse(text, value):
    assert memory.parse_memory(text) == value


@pytest.mark.parametrize("text", ["lots", "4X", "-1G", "10K"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ValueError):
        memory.parse_memory(text)


def test_activation_bytes_are_the_peak_of_live_tensors():
    # one sample: fc1 out (32) and relu out (32) alive together at the relu; then fc1's dies
    # and fc2 out (6) joins relu's: peak 64 floats
    got = memory.activation_bytes(_mlp(), {"x": np.zeros((1, 12), np.float32)})
    assert got == (32 + 32) * 4
    # at 10 samples, ten times as much
    assert memory.activation_bytes(_mlp(), {"x": np.zeros((10, 12), np.float32)}) == got * 10


def test_a_small_budget_chunks_calls_and_scores_the_same():
    model = _mlp()
    analysis = analyze_channels(import_model(model))
    data = {"x": np.random.default_rng(0).standard_normal((200, 12)).astype(np.float32)}
    metric = get_metric("cosine")
    free = Evaluator(model, analysis, data, metric, memory=1 << 30)
    tight = Evaluator(model, analysis, data, metric, memory=1 << 17)
    assert free.batched and free.max_rows == MAX_ROWS > 200
    # 128 KB over a few hundred bytes per sample (the gated model's tensors): below K x N
    assert tight.per_sample is not None
    assert tight.max_rows == (1 << 17) // int(tight.per_sample * memory.RUNTIME_FACTOR)
    assert tight.max_rows < 200 and not tight.batched
    masks = np.random.default_rng(1).uniform(size=(40, analysis.num_units)) > 0.3
    a, b = free.evaluate_many(masks), tight.evaluate_many(masks)
    assert np.allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_budget_below_one_sample_is_a_clear_error():
    model = _mlp()
    analysis = analyze_channels(import_model(model))
    data = {"x": np.zeros((8, 12), np.float32)}
    with pytest.raises(UsageError, match=r"more than the memory budget 64 B \(raise --memory"):
        Evaluator(model, analysis, data, get_metric("cosine"), memory=64)


def test_the_memory_option_reaches_the_search(tmp_path):
    data = {"x": np.random.default_rng(0).standard_normal((60, 12)).astype(np.float32)}
    a = prune(_mlp(), None, calib=data, strategy="sensitivity", target_params=0.4,
              memory="1M")
    b = prune(_mlp(), None, calib=data, strategy="sensitivity", target_params=0.4)
    assert np.array_equal(a.plan.removed, b.plan.removed)
    with pytest.raises(UsageError, match="memory"):
        prune(_mlp(), None, calib=data, memory="lots")
