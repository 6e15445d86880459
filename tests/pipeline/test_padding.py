"""Padding every calibration sample masks is trimmed from the sequence inputs when the original
model computes the same without it, and kept otherwise."""

import contextlib
import io

import numpy as np
import onnx
import pytest

from onnxprune.api import prune
from onnxprune.ir.arrays import Calibration
from onnxprune.ir.runtime import session
from onnxprune.pipeline.support.padding import trim_padding

torch = pytest.importorskip("torch")
nn = torch.nn

VOCAB, D = 120, 32


class Encoder(nn.Module):
    """Token embeddings, one attention layer over the padding mask (additive), a feed-forward
    and a mean pooling over the real tokens (or over every position: ``masked_pool=False``, an
    output the padding changes)."""

    def __init__(self, masked_pool=True):
        super().__init__()
        self.masked_pool = masked_pool
        self.emb, self.pos = nn.Embedding(VOCAB, D), nn.Embedding(64, D)
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.ff = nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Linear(64, D))

    def forward(self, input_ids, attention_mask):
        n = input_ids.shape[1]
        x = self.emb(input_ids) + self.pos(torch.arange(n))[None]
        add = (1.0 - attention_mask[:, None, :].float()) * -1e4
        att = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2) / D ** 0.5 + add, -1)
        x = x + self.o(att @ self.v(x))
        x = x + self.ff(x)
        if not self.masked_pool:
            return x.mean(1)
        m = attention_mask[..., None].float()
        return (x * m).sum(1) / m.sum(1)


def _export(path, masked_pool=True):
    torch.manual_seed(0)
    ids, mask = torch.ones(2, 7, dtype=torch.long), torch.ones(2, 7, dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(Encoder(masked_pool).eval(), (ids, mask), str(path), dynamo=False,
                          input_names=list(axes), output_names=["embedding"],
                          dynamic_axes={**axes, "embedding": {0: "batch"}}, opset_version=17)
    return onnx.load(str(path))


def _padded(n=24, longest=9, length=20, seed=0):
    """``n`` token rows of 3..``longest`` real tokens (one of exactly ``longest``), padded with
    zeros to ``length``."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, longest + 1, n)
    lengths[0] = longest
    ids = np.zeros((n, length), np.int64)
    mask = np.zeros((n, length), np.int64)
    for i, k in enumerate(lengths):
        ids[i, :k] = rng.integers(1, VOCAB, k)
        mask[i, :k] = 1
    return {"input_ids": ids, "attention_mask": mask}


def test_the_padding_every_sample_masks_is_trimmed(tmp_path):
    model = _export(tmp_path / "m.onnx")
    data = _padded()
    trimmed, what = trim_padding(model, Calibration({**data, "labels": np.arange(24)}))
    assert what is not None and (what.before, what.after) == (20, 9)
    assert what.names == ("attention_mask", "input_ids")
    assert trimmed["input_ids"].shape == (24, 9) and trimmed["attention_mask"].shape == (24, 9)
    assert np.array_equal(trimmed["input_ids"], data["input_ids"][:, :9])
    assert np.array_equal(trimmed["labels"], np.arange(24))  # not an input: as it was
    sess = session(model)
    full, short = sess.run(None, data)[0], sess.run(None, {k: trimmed[k] for k in data})[0]
    assert np.abs(full - short).max() <= 1e-5 * np.abs(full).max()  # every sample, not 8


def test_padding_the_outputs_read_is_kept(tmp_path):
    # the pooling averages every position: the padding is part of what the model computes
    model = _export(tmp_path / "m.onnx", masked_pool=False)
    data = Calibration(_padded())
    same, what = trim_padding(model, data)
    assert what is None and same is data


def test_nothing_to_trim_when_a_sample_fills_the_length(tmp_path):
    model = _export(tmp_path / "m.onnx")
    data = _padded(longest=20)
    same, what = trim_padding(model, Calibration(data))
    assert what is None and same["input_ids"].shape == (24, 20)


def test_the_trimmed_run_measures_what_the_padded_one_does(tmp_path):
    """The same cut (by weights alone) scored on the padded arrays (trim off) and on the
    trimmed ones: the pooled outputs, so the metric, do not see the padding either way.
    (Criteria that read activations do: trimmed, they read the real tokens' only.)"""
    model = _export(tmp_path / "m.onnx")
    data = _padded(n=40, length=32)
    kw = dict(ratio=0.5, criterion="l2", metric="cosine", calib=data, holdout=0, recover="none")
    trimmed = prune(model, **kw)
    padded = prune(model, calib_trim="off", **kw)
    assert trimmed.calibration and "trimmed to 9 of 32 positions" in trimmed.calibration
    assert not padded.calibration
    assert trimmed.quality["after"] < 0.999  # a cut that changes the outputs
    assert trimmed.quality["after"] == pytest.approx(padded.quality["after"], abs=1e-6)
    assert trimmed.verification.passed
