"""Decoders exported by Optimum with a key/value cache (tests/data/optimum, made by
scripts/make_optimum_kv.py from random-init checkpoints): the cache interface stays unless
``prune_kv_cache`` opens it; then heads leave every past/present pair alike, verified against
the oracle with the cache cut to the kept heads."""

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxprune.api import analyze, prune
from onnxprune.ir.runtime import session
from onnxprune.ir.shapes import choose_shapes, evaluate_dim

DATA = Path(__file__).resolve().parents[1] / "data" / "optimum"
MODELS = {"llama": 2, "gpt2": 4}  # key/value heads per layer


def dims(vi) -> list:
    return [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]


def cache_shapes(model: onnx.ModelProto) -> dict[str, list]:
    return {v.name: dims(v) for v in [*model.graph.input, *model.graph.output]
            if v.name.startswith(("past_key_values", "present"))}


def test_a_dimension_written_as_a_sum_takes_its_parts_values():
    assert evaluate_dim("past_sequence_length + sequence_length",
                        {"past_sequence_length": 32, "sequence_length": 5}) == 37
    assert evaluate_dim("2*s - 1", {"s": 4}) == 7
    assert evaluate_dim("sequence_length", {"sequence_length": 3}) is None  # a plain name
    assert evaluate_dim("floor(s/2)", {"s": 4}) is None
    model = onnx.load(str(DATA / "llama_kv.onnx"))
    for shapes in choose_shapes(model):
        past, seq = shapes["past_key_values.0.key"][2], shapes["input_ids"][1]
        assert shapes["attention_mask"][1] == past + seq


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_cache_interface_stays_by_default(name):
    model = onnx.load(str(DATA / f"{name}_kv.onnx"))
    groups = analyze(model).channels.groups
    heads = [g for g in groups if g.channels == MODELS[name]]
    assert heads and all(g.frozen and "past_key_values" in g.reason for g in heads)
    r = prune(model, ratio=0.5)
    assert r.verification.passed and r.params_after < r.params_before  # hidden width and FFN
    assert cache_shapes(r.model) == cache_shapes(model)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_heads_leave_every_past_present_pair_alike(name, recwarn):
    model = onnx.load(str(DATA / f"{name}_kv.onnx"))
    heads = [g for g in analyze(model, prune_kv_cache=True).channels.groups
             if g.channels == MODELS[name]]
    assert len(heads) == 2 and not any(g.frozen for g in heads)  # one per layer
    r = prune(model, ratio=0.5, prune_kv_cache=True)
    assert r.verification.passed and len(r.verification.shapes) == 2
    shapes = cache_shapes(r.model)
    for layer in range(2):
        for kind in ("key", "value"):
            past, present = (shapes[f"past_key_values.{layer}.{kind}"],
                             shapes[f"present.{layer}.{kind}"])
            assert past[1] == present[1] == MODELS[name] // 2
    assert any("interface changes" in str(w.message) for w in recwarn)
    # the pruned model runs on a cache of its own shapes and extends it by the new tokens
    sess = session(r.model)
    rng = np.random.default_rng(0)
    feeds = {}
    for i in r.model.graph.input:
        d = [{"batch_size": 2, "sequence_length": 3, "past_sequence_length": 4}.get(x, x)
             for x in dims(i)]
        d = [7 if x == "past_sequence_length + sequence_length" else x for x in d]
        feeds[i.name] = (rng.standard_normal(d).astype(np.float32) if "past" in i.name
                         else np.ones(d, np.int64))
    outs = dict(zip([o.name for o in r.model.graph.output], sess.run(None, feeds), strict=True))
    assert outs["present.1.value"].shape == (2, MODELS[name] // 2, 7, 8)


def test_distillation_learns_from_the_teacher_cut_as_the_student_reads_and_writes_it():
    """An opened cache: the student is fed the cache cut to its kept heads, and its targets are
    the teacher's outputs (on the whole cache) cut alike."""
    from onnxprune.recover.distill_data import Targets
    from onnxprune.recover.torch_bridge import TorchGraph

    model = onnx.load(str(DATA / "llama_kv.onnx"))
    r = prune(model, ratio=0.5, prune_kv_cache=True)
    kept = np.array([True, False])  # a cut of the 2 key/value heads (Targets applies any)
    rng = np.random.default_rng(1)
    feeds = {"input_ids": rng.integers(0, 64, (4, 3)), "attention_mask": np.ones((4, 7), np.int64),
             "position_ids": np.tile(np.arange(4, 7), (4, 1))}
    for layer in range(2):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{layer}.{kind}"] = rng.standard_normal((4, 2, 4, 8)).astype(
                np.float32)
    teacher = dict(zip([o.name for o in model.graph.output], session(model).run(None, feeds),
                       strict=True))
    cut = {v.name: [(1, kept)] for v in [*r.model.graph.input, *r.model.graph.output]
           if v.name.startswith(("past", "present"))}
    student = {k: np.compress(kept, v, axis=1) if k in cut else v for k, v in feeds.items()}
    graph = TorchGraph(r.model)
    targets = Targets(model, student, graph, (), np.arange(4), None, feeds, cut)
    for name, t in zip(graph.output_names, targets.outputs_all, strict=True):
        expected = teacher[name] if name == "logits" else np.compress(kept, teacher[name], 1)
        np.testing.assert_array_equal(t, expected)
    assert targets.outputs_all[1].shape == (4, 1, 7, 8)
    # and the whole recipe runs on it: each stage measured on the kept heads, kept or undone
    r = prune(model, ratio=0.5, prune_kv_cache=True, calib_random=16, compensate=True,
              recover="distill")
    assert r.verification.passed
    assert [s["stage"] for s in r.stages["stages"]] == ["unpruned", "pruned", "compensate",
                                                        "distill"]
    assert 0 < r.stages["stages"][1]["calib"] < 1


@pytest.mark.parametrize("name", sorted(MODELS))
def test_attention_blocks_take_their_cache_pair_only_when_asked(name, recwarn):
    """An attention block writes its layer's present output: kept, with the reason, unless
    --prune-kv-cache lets the pair go with the block (an interface change, warned); verified
    with the pruned model fed and read without the pair."""
    model = onnx.load(str(DATA / f"{name}_kv.onnx"))
    blocks = analyze(model).blocks
    attention = [b for b in blocks if b.kind == "attention"]
    assert len(attention) == 2 and not any(b.removable for b in attention)
    assert all("--prune-kv-cache removes the pair" in b.reason for b in attention)
    r = prune(model, remove_blocks=4, prune_kv_cache=True)
    assert r.verification.passed and len(r.verification.shapes) == 2
    assert [o.name for o in r.model.graph.output] == ["logits"]
    assert not any(i.name.startswith("past_key_values") for i in r.model.graph.input)
    assert any("key/value cache with them" in str(w.message) for w in recwarn)


def test_attention_blocks_leave_with_their_cache_in_a_calibrated_recipe():
    """With calibration data the metric reads the outputs that stay whatever goes (the logits):
    the search's figure on the oracle and the written model's stage figure are one number,
    and compensation and distillation feed the pruned model without the pair."""
    model = onnx.load(str(DATA / "llama_kv.onnx"))
    r = prune(model, remove_blocks=4, prune_kv_cache=True, calib_random=16, compensate=True,
              recover="distill")
    assert r.verification.passed and [o.name for o in r.model.graph.output] == ["logits"]
    rows = {s["stage"]: s for s in r.stages["stages"]}
    assert set(rows) == {"unpruned", "pruned", "compensate", "distill"}
    assert rows["pruned"]["calib"] == pytest.approx(r.quality["after"], abs=1e-5)
    assert rows["pruned"]["calib"] < 0.99  # four blocks of four: a real loss to measure
    # the figure is the logits' cosine: recomputed here on the held-out share's definition
    plain = prune(model, remove_blocks=4, prune_kv_cache=True, calib_random=16)
    rng = np.random.default_rng(3)
    feeds = {"input_ids": rng.integers(0, 64, (3, 5)), "attention_mask": np.ones((3, 9), np.int64),
             "position_ids": np.tile(np.arange(4, 9), (3, 1))}
    past = {f"past_key_values.{i}.{k}": rng.standard_normal((3, 2, 4, 8)).astype(np.float32)
            for i in range(2) for k in ("key", "value")}
    want = session(model).run(["logits"], {**feeds, **past})[0]
    got = session(plain.model).run(None, feeds)[0]
    assert got.shape == want.shape and not np.allclose(got, want, atol=1e-3)


def test_candidates_of_a_gemm_on_batch_times_tokens_are_scored_one_a_run():
    """GPT-2's Conv1D layers read [batch x tokens, width]: a gate row per sample does not
    broadcast there, so candidates run one at a time (it failed in onnxruntime)."""
    model = onnx.load(str(DATA / "gpt2_kv.onnx"))
    r = prune(model, ratio=0.3, calib_random=4, strategy="sensitivity", holdout=0)
    assert r.verification.passed and 0 < r.quality["after"] < 1
