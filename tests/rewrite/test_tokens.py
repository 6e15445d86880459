"""Keeping only some tokens of an input vocabulary: the embedding table loses the other rows,
the model reads the same ids, a removed id reads exactly its fallback's row (the nearest kept
one by cosine, or a given token), whatever else reads the ids sees them unchanged; the run
checks it, refuses what it cannot trim before changing anything, and parameter targets count
from the model before."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.api import analyze, prune
from onnxprune.cli.main import main
from onnxprune.errors import VerificationError
from onnxprune.pipeline.passes import tokens as pt
from onnxprune.rewrite.tokens import TokenError, keep_tokens, token_inputs
from onnxprune.zoo.builder import GraphBuilder

VOCAB, DIM = 60, 16


def _encoder(tied: bool = False, cast: bool = False, types: int = 2, head: int = 0
             ) -> onnx.ModelProto:
    """ids [batch, seq] (and token types) -> embeddings -> two MatMuls -> a mean over the
    tokens that are not padding (id 0, read from the ids themselves, as BERT exports do).
    ``tied``: a second output scores the vocabulary with the embedding table (an LM head);
    ``head``: an untied head of that many classes instead."""
    b = GraphBuilder(seed=3)
    b.inputs.append(helper.make_tensor_value_info(
        "ids", TensorProto.INT32 if cast else TensorProto.INT64, ["batch", "seq"]))
    ids = b.op("Cast", ["ids"], to=TensorProto.INT64) if cast else "ids"
    table = b.weight(VOCAB, DIM, hint="word_embeddings", scale=1.0)
    h = b.op("Gather", [table, ids], axis=0)
    if types:
        b.inputs.append(helper.make_tensor_value_info("types", TensorProto.INT64,
                                                      ["batch", "seq"]))
        h = b.op("Add", [h, b.op("Gather", [b.weight(types, DIM, hint="type_embeddings"),
                                            "types"], axis=0)])
    h = b.op("Relu", [b.matmul(h, DIM, 24, name="fc1")])
    h = b.matmul(h, 24, DIM, name="fc2")
    mask = b.op("Cast", [b.op("Greater", [ids, b.const(np.array(0, np.int64))])],
                to=TensorProto.FLOAT)
    mask = b.op("Unsqueeze", [mask, b.const(np.array([-1], np.int64))])
    total = b.op("ReduceSum", [b.op("Mul", [h, mask]), b.const(np.array([1], np.int64))],
                 keepdims=0)
    count = b.op("ReduceSum", [mask, b.const(np.array([1], np.int64))], keepdims=0)
    outs = [b.op("Div", [total, b.op("Max", [count, b.const(np.float32(1.0))])])]
    if tied:
        outs.append(b.op("MatMul", [h, b.op("Transpose", [table], perm=[1, 0])]))
    if head:
        outs.append(b.matmul(h, DIM, head, name="lm_head"))
    return b.build(outs)


def _shared() -> onnx.ModelProto:
    """Two id inputs looking one table up (an encoder-decoder's shared embeddings)."""
    b = GraphBuilder(seed=4)
    for name in ("ids", "decoder_ids"):
        b.inputs.append(helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"]))
    table = b.weight(VOCAB, DIM, hint="shared")
    a, c = (b.op("Gather", [table, n], axis=0) for n in ("ids", "decoder_ids"))
    return b.build([b.matmul(b.op("Add", [a, c]), DIM, 4)])


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _table(model: onnx.ModelProto, hint: str = "word_embeddings") -> np.ndarray:
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if hint in i.name)


def _with_table(model: onnx.ModelProto, rows: np.ndarray, hint: str = "word_embeddings"
                ) -> onnx.ModelProto:
    """The original graph with its embedding table replaced (the independent oracle)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if hint in init.name:
            init.CopyFrom(numpy_helper.from_array(rows.astype(np.float32), init.name))
    return out


def _trim(model, kept, **kw) -> tuple[onnx.ModelProto, object]:
    g = gs.import_onnx(model)
    t = keep_tokens(g, kept, **kw)
    out = gs.export_onnx(g)
    out.ir_version = model.ir_version
    onnx.checker.check_model(out, full_check=True)
    return out, t


def _feeds(seed: int = 0, dtype=np.int64) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (8, 12))
    ids[:, -3:] = 0  # padding
    return {"ids": ids.astype(dtype), "types": rng.integers(0, 2, (8, 12)).astype(np.int64)}


KEPT = [0, *range(2, 20), 33, 41]


def test_removed_tokens_read_their_nearest_kept_row_exactly():
    model = _encoder()
    trimmed, t = _trim(model, KEPT)
    assert t.input == "ids" and t.vocabulary == VOCAB and t.kept == len(KEPT)
    assert t.params_removed == (VOCAB - len(KEPT)) * DIM and t.fallback == "nearest"
    assert [i.name for i in trimmed.graph.input] == ["ids", "types"]
    assert _table(trimmed).shape == (len(KEPT), DIM)
    # independently: each removed row replaced by its most similar kept row (cosine)
    e = _table(model)
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    rows = e.copy()
    removed = [i for i in range(VOCAB) if i not in KEPT]
    for i in removed:
        rows[i] = e[KEPT[int(np.argmax(unit[KEPT] @ unit[i]))]]
    assert np.array_equal(t.remap[removed], [KEPT[int(np.argmax(unit[KEPT] @ unit[i]))]
                                             for i in removed])
    oracle = _with_table(model, rows)
    for seed in range(3):
        f = _feeds(seed)
        want, got = _run(oracle, f), _run(trimmed, f)
        assert np.array_equal(want[0], got[0])
    # kept ids alone: exactly the original model
    f = _feeds(5)
    f["ids"] = np.asarray(KEPT)[f["ids"] % len(KEPT)]
    assert np.array_equal(_run(model, f)[0], _run(trimmed, f)[0])
    # and a removed id does change the output (the test can fail)
    f["ids"][0, 0] = removed[0]
    assert not np.array_equal(_run(model, f)[0], _run(trimmed, f)[0])


def test_a_fallback_token_and_ids_read_elsewhere_stay_raw():
    model = _encoder()
    trimmed, t = _trim(model, KEPT, fallback=0)  # every removed id reads the padding row
    rows = _table(model).copy()
    rows[[i for i in range(VOCAB) if i not in KEPT]] = rows[0]
    f = _feeds(1)
    # the mask still reads the raw ids: a removed id counts as a token, not as padding
    assert np.array_equal(_run(_with_table(model, rows), f)[0], _run(trimmed, f)[0])
    padded = dict(f, ids=np.where(np.isin(f["ids"], KEPT), f["ids"], 0))
    assert not np.array_equal(_run(model, padded)[0], _run(trimmed, f)[0])


def test_ids_through_a_cast_and_a_named_input():
    model = _encoder(cast=True)
    trimmed, t = _trim(model, KEPT)
    f = _feeds(2, np.int32)
    f["ids"] = np.asarray(KEPT, np.int32)[f["ids"] % len(KEPT)]
    assert np.array_equal(_run(model, f)[0], _run(trimmed, f)[0])
    # the token types: a 2-row table, named explicitly
    model = _encoder()
    trimmed, t = _trim(model, [1], input="types", fallback=1)
    assert t.input == "types" and _table(trimmed, "type_embeddings").shape == (1, DIM)
    f = _feeds(3)
    rows = _table(model, "type_embeddings").copy()
    rows[0] = rows[1]
    assert np.array_equal(_run(_with_table(model, rows, "type_embeddings"), f)[0],
                          _run(trimmed, f)[0])


def test_what_cannot_be_trimmed_is_refused_before_any_change():
    cases = [
        (_encoder(tied=True), KEPT, {}, "Transpose node .* reads it too .tied"),
        (_shared(), KEPT, {"input": "ids"}, "Gather node .* looks it up too"),
        (_encoder(), [0, VOCAB], {}, f"token {VOCAB} does not exist"),
        (_encoder(), f"0-{VOCAB - 1}", {}, "nothing to cut"),
        (_encoder(), KEPT, {"fallback": 1}, "fallback token 1 is not among the kept"),
        (_encoder(), KEPT, {"input": "nope"}, "no input 'nope'"),
        (_encoder(types=VOCAB), KEPT, {}, "ids and types each index 60-row tables: name the one"),
    ]
    for model, kept, kw, msg in cases:
        g = gs.import_onnx(model)
        before = gs.export_onnx(g).SerializeToString()
        with pytest.raises(TokenError, match=msg):
            keep_tokens(g, kept, **kw)
        assert gs.export_onnx(g).SerializeToString() == before
    b = GraphBuilder()
    x = b.input("x", ["batch", 4])
    with pytest.raises(TokenError, match="no integer input"):
        keep_tokens(gs.import_onnx(b.build([b.gemm(x, 4, 3)])), [0])


def test_analyze_names_the_vocabulary_inputs():
    found = token_inputs(gs.import_onnx(_encoder()))
    assert [(d["input"], d["vocabulary"], d["params"]) for d in found] == [
        ("ids", VOCAB, VOCAB * DIM), ("types", 2, 2 * DIM)]
    assert analyze(_encoder()).token_inputs[0]["input"] == "ids"
    assert token_inputs(gs.import_onnx(_encoder(tied=True)))[0]["vocabulary"] == VOCAB


def _calib(n: int = 48) -> dict:
    rng = np.random.default_rng(7)
    return {"ids": rng.choice(KEPT, (n, 12)).astype(np.int64),
            "types": rng.integers(0, 2, (n, 12)).astype(np.int64)}


def test_a_run_counts_the_target_from_the_model_before(tmp_path):
    model = _encoder()
    out = tmp_path / "small.onnx"
    r = prune(model, out, keep_tokens=KEPT, target_params=0.5, calib=_calib(),
              metric="cosine", strategy="global")
    assert r.tokens["kept"] == len(KEPT)
    assert r.tokens["params_removed"] == (VOCAB - len(KEPT)) * DIM
    total = VOCAB * DIM + 2 * DIM + DIM * 24 + 24 * DIM + 1  # + the count's clamp
    assert r.params_before == total  # the input model's
    assert 0 < r.selection["target_after_trim"] < 0.5 and r.plan.removed_units > 0
    assert r.params_after <= 0.5 * total + 24
    rows = {s["stage"]: s for s in r.stages["stages"]}
    # the calibration ids are all kept: the trim alone costs nothing on them
    assert rows["tokens"]["calib"] == pytest.approx(1.0, abs=1e-6)
    assert rows["pruned"]["heldout"] < 1.0
    written = onnx.load(out)
    assert [i.name for i in written.graph.input] == ["ids", "types"]
    assert _table(written).shape[0] == len(KEPT)  # (its columns may be cut as channels)


def test_classes_and_tokens_together_measure_against_the_model_before_both(tmp_path):
    model = _encoder(types=0, head=VOCAB)
    r = prune(model, tmp_path / "lm.onnx", keep_tokens=KEPT, keep_classes="0-29",
              keep_classes_output=model.graph.output[1].name, ratio=0.0,
              calib={"ids": _calib()["ids"]}, metric="cosine")
    assert r.tokens["kept"] == len(KEPT) and r.classes["kept"] == 30
    assert r.params_before == VOCAB * DIM + DIM * 24 + 24 * DIM + DIM * VOCAB + 1
    assert r.tokens["params_removed"] == (VOCAB - len(KEPT)) * DIM
    assert r.params_after == (r.params_before - r.tokens["params_removed"]
                              - r.classes["params_removed"])
    assert "classes+tokens" in [s["stage"] for s in r.stages["stages"]]


def test_a_broken_trim_is_caught_before_anything_is_written(tmp_path, monkeypatch):
    real = pt.fallback_ids

    def shifted(graph, trim):  # an oracle that disagrees with what the rewrite did
        moved = trim.remap.copy()
        moved[moved != np.arange(moved.size)] = trim.indices[0]
        real(graph, type(trim)(**{**trim.__dict__, "remap": moved}))

    monkeypatch.setattr(pt, "fallback_ids", shifted)
    out = tmp_path / "small.onnx"
    with pytest.raises(VerificationError, match="keeping tokens of ids changed"):
        prune(_encoder(), out, keep_tokens=KEPT, ratio=0.2)
    assert not out.exists()


def test_the_cli_says_what_it_kept_and_refuses_bad_options(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(_encoder(), src)
    keep = tmp_path / "keep.txt"
    keep.write_text("\n".join(map(str, KEPT)))
    out = tmp_path / "out.onnx"
    assert main(["prune", str(src), "-o", str(out), "--keep-tokens", str(keep),
                 "--ratio", "0"]) == 0
    text = capsys.readouterr().out
    assert f"tokens: ids reads {len(KEPT)} of its {VOCAB} tokens" in text
    assert out.exists()
    out2 = tmp_path / "out2.onnx"
    assert main(["prune", str(src), "-o", str(out2), "--keep-tokens", "0-9",
                 "--token-fallback", "unk"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'nearest' or a token id" in err[0] and not out2.exists()
    assert main(["prune", str(src), "-o", str(out2), "--keep-tokens", "0-9",
                 "--keep-tokens-input", "types"]) == 2
    err = capsys.readouterr().err
    assert "token 9 does not exist" in err and not out2.exists()
    assert main(["prune", str(src), "-o", str(out2), "--keep-tokens", "kept.txt"]) == 2
    assert "kept.txt: no such file" in capsys.readouterr().err and not out2.exists()
    assert main(["analyze", str(src)]) == 0
    assert "input ids: its 60-token embedding" in capsys.readouterr().out


def test_nearest_is_found_in_the_widest_table_and_needs_one():
    b = GraphBuilder(seed=5)
    b.inputs.append(helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]))
    bias = b.const(np.random.default_rng(1).standard_normal(VOCAB).astype(np.float32), "bias")
    table = b.weight(VOCAB, DIM, hint="word_embeddings", scale=1.0)
    per_token = b.op("Unsqueeze", [b.op("Gather", [bias, "ids"], axis=0),
                                   b.const(np.array([-1], np.int64))])
    h = b.op("Add", [per_token, b.op("Gather", [table, "ids"], axis=0)])  # the 1-D one first
    model = b.build([b.matmul(h, DIM, 4)])
    trimmed, t = _trim(model, KEPT)
    e = _table(model)
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    removed = [i for i in range(VOCAB) if i not in KEPT]
    assert np.array_equal(t.remap[removed], [KEPT[int(np.argmax(unit[KEPT] @ unit[i]))]
                                             for i in removed])
    assert sorted(t.tables) == sorted([bias, table])
    b = GraphBuilder(seed=5)
    b.inputs.append(helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]))
    only = b.op("Gather", [b.const(np.arange(VOCAB, dtype=np.float32), "bias"), "ids"], axis=0)
    g = gs.import_onnx(b.build([b.op("ReduceSum", [only], keepdims=0)]))
    with pytest.raises(TokenError, match="one value per token"):
        keep_tokens(g, KEPT)
    assert keep_tokens(g, KEPT, fallback=0).params_removed == VOCAB - len(KEPT)
