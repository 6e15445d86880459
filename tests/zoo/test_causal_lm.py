"""The causal LM of the zoo (Llama, byte-level, on the standard library's sources): the split by
file, the data windows, a few training steps, the export, and a verified pruning whose
held-out perplexity stays finite."""

import math
import sysconfig

import numpy as np
import onnx
import pytest

pytest.importorskip("transformers")
from onnxprune.api import prune  # noqa: E402
from onnxprune.zoo import causal_lm as lm  # noqa: E402

TINY = lm.LMConfig(hidden=32, layers=2, heads=4, kv_heads=2, ffn=64, seq=32, batch=8, steps=8,
                   warmup=2)


def test_files_split_by_file_and_windows_come_from_their_split():
    files = lm.corpus_files()
    assert files == sorted(files) and len(files) > 100
    root = sysconfig.get_paths()["stdlib"]
    splits = [lm.split_of(f.relative_to(root).as_posix()) for f in files]
    shares = {s: splits.count(s) / len(splits) for s in lm.SPLITS}
    assert shares["train"] > 0.7 and 0.05 < shares["heldout"] < 0.2, shares
    held = lm.windows("heldout", 4, seq=16)
    assert held["input_ids"].shape == (4, 16) and held["input_ids"].dtype == np.int64
    assert (held["attention_mask"] == 1).all()
    # held-out windows are byte strings of the held-out text, never of the others
    text = lm.tokens("heldout").tobytes()
    for row in held["input_ids"]:
        assert bytes(row.astype(np.uint8).tolist()) in text
    calib = lm.windows("calib", 3, seq=16, seed=1)
    assert (calib["input_ids"] == lm.windows("calib", 3, seq=16, seed=1)["input_ids"]).all()


def test_a_tiny_lm_trains_exports_and_prunes_with_a_finite_perplexity(tmp_path):
    model = lm.trained(tmp_path / "cache", TINY, log=None)
    again = lm.trained(tmp_path / "cache", TINY, log=None)  # from the cache this time
    a, b = model.state_dict(), again.state_dict()
    assert all((a[k] == b[k]).all() for k in a)
    record = lm.training_record(tmp_path / "cache", TINY)
    assert record["steps"] == TINY.steps and math.isfinite(record["loss"])
    path = lm.export(model, tmp_path / "lm.onnx")
    held = lm.windows("heldout", 8, seq=32)
    before = lm.perplexity(path, held)
    assert 1 < before < lm.VOCAB * 2
    r = prune(path, target_params=0.2, strategy="global", criterion="activation",
              calib=lm.windows("calib", 16, seq=32), metric="perplexity", holdout=0,
              recover="distill", distill_steps=4, distill_batch=4)
    assert r.verification.passed and r.params_after < 0.9 * r.params_before
    # the torch interpreter ran the Llama graph (rotary embeddings, causal mask) and learned
    # from the teacher's softmax: the perplexity metric picks the KL loss
    assert r.recovery["distill"]["loss"] == "kl" and r.recovery["distill"]["steps"] >= 1
    after = lm.perplexity(r.model, held)
    assert math.isfinite(after) and after > 1


def test_the_lm_with_its_cache_reads_text_as_without_and_prunes_its_heads(tmp_path):
    """The export with a key/value cache (Optimum's interface) gives the same perplexity read
    in two steps through its cache as the export without; calibrated with a past, its key/value
    groups prune with --prune-kv-cache and the pruned model reads text through its own cut
    cache."""
    model = lm.trained(tmp_path / "cache", TINY, log=None)
    plain = lm.export(model, tmp_path / "lm.onnx")
    cached = lm.export(model, tmp_path / "lm_cache.onnx", cache=True)
    names = [i.name for i in onnx.load(str(cached)).graph.input]
    assert names[:2] == ["input_ids", "attention_mask"]
    assert names[2:] == [f"past_key_values.{n}.{k}" for n in range(2) for k in ("key", "value")]
    held = lm.windows("heldout", 8, seq=32)
    # float32 sums in another order (the second half attends to a concatenated cache): 1e-5
    assert lm.perplexity(cached, held) == pytest.approx(lm.perplexity(plain, held), rel=1e-5)
    calib = lm.with_past(cached, lm.windows("calib", 16, seq=32, seed=1), 16)
    assert calib["input_ids"].shape == (16, 16) and calib["attention_mask"].shape == (16, 32)
    assert calib["past_key_values.0.key"].shape == lm.cache_shape(model, 16, 16)
    r = prune(cached, ratio=0.5, criterion="activation", calib=calib, metric="perplexity",
              holdout=0, compensate=True, prune_kv_cache=True)
    assert r.verification.passed
    kv = {i.name: i.type.tensor_type.shape.dim[1].dim_value for i in r.model.graph.input
          if i.name.startswith("past_key_values.")}
    assert set(kv.values()) == {TINY.kv_heads // 2}
    after = lm.perplexity(r.model, held)
    assert math.isfinite(after) and after > 1
