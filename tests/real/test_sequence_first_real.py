"""A recognizer whose logits hold their samples second (captcha_whisperer's CRNN:
``[20, batch, 37]``) searched under a memory budget that runs its candidates in chunks:
the outputs are the whole run's, and the recipe under ``--memory`` finishes (joined along
the first axis, the chunks' outputs were a shape error: an internal error in verify)."""

from __future__ import annotations

import numpy as np
import pytest
from corpus import CORPUS, available

from onnxprune.analysis.channels import analyze_channels
from onnxprune.api import prune
from onnxprune.ir.graph import import_model
from onnxprune.ir.runtime import output_axes, session
from onnxprune.search.evaluate import Evaluator
from onnxprune.search.quality import get_metric
from onnxprune.testing import normalized

pytestmark = pytest.mark.real
MODEL = next(m for m in CORPUS if m.name == "captcha-crnn")


@pytest.fixture
def crnn(tmp_path):
    if not available(MODEL):
        pytest.skip(f"{MODEL.package} is not installed (pip install -e '.[real]')")
    return MODEL.locate(tmp_path)


def test_candidates_in_chunks_are_the_whole_runs(crnn):
    import onnx

    ref = normalized(onnx.load(str(crnn)))
    assert output_axes(ref) == [1]
    analysis = analyze_channels(import_model(ref))
    images = {"image": np.random.default_rng(0).random((11, 3, 60, 160), np.float32)}
    whole = Evaluator(ref, analysis, images, get_metric("cosine"))
    per = whole.per_sample
    chunked = Evaluator(ref, analysis, images, get_metric("cosine"), memory=int(per * 2.5 * 4))
    assert chunked.max_rows < 11 and 11 % chunked.max_rows  # a smaller last chunk
    keep = np.ones(analysis.num_units, np.float32)
    keep[np.random.default_rng(1).choice(analysis.num_units, analysis.num_units // 4,
                                         replace=False)] = 0.0
    want = session(whole.oracle.model).run(None, {**images, "onnxprune_gates": keep[None]})[0]
    got = chunked.outputs(keep)[0]
    assert got.shape == want.shape == (20, 11, 37)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_the_recipe_under_a_memory_cap_finishes(crnn, tmp_path):
    r = prune(crnn, tmp_path / "o.onnx", calib_random=30, strategy="sensitivity",
              target_params=0.3, memory="420M")
    assert r.params_after < 0.8 * r.params_before and (tmp_path / "o.onnx").is_file()
