"""The random-token probe: a shifted held-out set for models that read token ids, measured
after every stage; a refit that learns the calibration text's style is undone by it."""

import warnings

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from onnxprune.api import prune
from onnxprune.ir.arrays import Calibration
from onnxprune.pipeline.support.augment import with_token_copies
from onnxprune.pipeline.support.probe import token_inputs, token_probe
from onnxprune.zoo.builder import GraphBuilder

SEEN = np.arange(10, 200, 10)  # the calibration text's vocabulary: 19 ids of 200


def token_model(types: bool = False):
    """Embedding -> MatMul -> Relu -> MatMul -> mean over positions. The calibration tokens
    never use the second half of the embedding, which only channels 32-63 read: on calibration
    text those channels are silent, on other text they speak."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((200, 16)).astype(np.float32)
    table[SEEN, 8:] = 0
    table[[1, 2], 8:] = 0  # the markers too
    up = np.zeros((16, 64), np.float32)
    up[:8, :32] = rng.standard_normal((8, 32))
    up[8:, 32:] = rng.standard_normal((8, 32))
    b = GraphBuilder(seed=0)
    b.inputs.append(helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 8]))
    e = b.op("Gather", [b.const(table, "embed"), "input_ids"], name="embed")
    if types:  # a segment-id input on a 2-row table: not token ids
        b.inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64,
                                                      ["batch", 8]))
        t = b.op("Gather", [b.weight(2, 16, hint="types"), "token_type_ids"], name="types")
        e = b.op("Add", [e, t])
    h = b.op("Relu", [b.op("MatMul", [e, b.const(up, "up")], name="up")])
    y = b.matmul(h, 64, 16, name="down")
    return b.build([b.op("ReduceMean", [y], axes=[1], keepdims=0, name="pool")])


def templated(n: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """Sentences of the calibration style: marker 1, six words of SEEN, marker 2."""
    rng = np.random.default_rng(seed)
    ids = np.concatenate([np.ones((n, 1)), rng.choice(SEEN, (n, 6)), np.full((n, 1), 2)], 1)
    return {"input_ids": ids.astype(np.int64)}


def test_token_inputs_are_the_integer_inputs_that_index_an_embedding_table():
    graph = gs.import_onnx(token_model(types=True))
    assert token_inputs(graph) == {"input_ids": 200}  # the 2-row segment table is not one
    from test_stages import _mlp

    assert token_inputs(gs.import_onnx(_mlp())) == {}


def test_the_probe_keeps_markers_and_padding_and_draws_content_from_the_vocabulary():
    data = templated(30)
    data["input_ids"][:5, 5:7] = 0  # padding at the end of five sentences
    data["input_ids"][:5, 7] = 0
    data["input_ids"][:5, 4] = 2  # their end marker moved before the padding
    mask = (data["input_ids"] != 0).astype(np.int64)
    cal = Calibration({**data, "attention_mask": mask})
    probe = token_probe(gs.import_onnx(token_model()), cal, seed=1)
    ids, new = cal["input_ids"], probe["input_ids"]
    assert new.shape == ids.shape and new.dtype == ids.dtype
    assert (new[:, 0] == 1).all()  # the first marker stays
    last = mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
    assert (new[np.arange(30), last] == 2).all()  # and the last one, wherever it stands
    assert (new[mask == 0] == 0).all() and (probe["attention_mask"] == mask).all()
    content = np.ones_like(mask, bool)
    content[:, 0] = False
    content[np.arange(30), last] = False
    content &= mask == 1
    assert new[content].min() >= 10 and new[content].max() <= 190
    assert np.isin(new[content], SEEN).mean() < 0.3  # mostly ids the calibration never used
    again = token_probe(gs.import_onnx(token_model()), cal, seed=1)
    assert np.array_equal(again["input_ids"], new)  # seeded


def test_token_copies_follow_the_data_with_other_draws():
    graph = gs.import_onnx(token_model())
    data = templated(10)
    cal = Calibration({**data, "pos": np.arange(8)}, {"input_ids": 0, "pos": None})
    got = with_token_copies(graph, cal, 3, seed=7)
    ids = got["input_ids"]
    assert ids.shape == (40, 8) and np.array_equal(ids[:10], data["input_ids"])
    assert got.axes == cal.axes and np.array_equal(got["pos"], np.arange(8))  # fed whole
    for i in range(3):  # copy i is the probe of seed 7 + i: markers kept, content redrawn
        want = token_probe(graph, cal, seed=7 + i)["input_ids"]
        assert np.array_equal(ids[10 * (i + 1):10 * (i + 2)], want)
    assert not np.array_equal(ids[10:20], ids[20:30])
    assert with_token_copies(graph, cal, 0) is None
    from test_stages import _data, _mlp

    assert with_token_copies(gs.import_onnx(_mlp()), Calibration(_data(10)), 2) is None


def test_no_probe_without_token_ids_or_with_too_few_distinct_ones():
    graph = gs.import_onnx(token_model())
    few = {"input_ids": np.tile(np.array([1, 10, 20, 30, 40, 50, 60, 2]), (10, 1))}
    assert token_probe(graph, Calibration(few)) is None
    from test_stages import _data, _mlp

    assert token_probe(gs.import_onnx(_mlp()), Calibration(_data(10))) is None


def _run(**kw):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r = prune(token_model(), calib=templated(), ratio=0.5, compensate=True, criterion="l2",
                  **kw)
    return r, [str(w.message) for w in seen if "worse" in str(w.message)]


def test_a_refit_that_learns_the_calibration_style_is_undone_by_the_probe():
    r, said = _run(compensate_augment=0)  # fitted on the calibration text alone
    rows = {row["stage"]: row for row in r.stages["stages"]}
    assert r.stages["samples"] == {"calib": 32, "heldout": 8, "probe": 40}
    assert r.stages["sets"]["probe"] == "random-token probe"
    # the held-out share (calibration style) says the refit is perfect (up to the ridge)...
    assert rows["compensate"]["heldout"] == pytest.approx(1.0, abs=1e-3)
    assert rows["compensate"]["heldout"] > rows["pruned"]["heldout"]
    # ...the probe says other text got worse: the pruned model before the refit is written
    assert rows["compensate"]["probe"] < rows["pruned"]["probe"]
    assert rows["compensate"]["kept"] is False
    assert said and "random-token probe" in said[0] and "held-out" not in said[0]
    plain = prune(token_model(), calib=templated(), ratio=0.5, criterion="l2")
    got = {i.name: onnx_array(i) for i in r.model.graph.initializer}
    want = {i.name: onnx_array(i) for i in plain.model.graph.initializer}
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)


def test_without_the_probe_the_same_refit_is_kept():
    r, said = _run(probe="off", compensate_augment=0)
    assert "probe" not in r.stages["samples"] and not said
    assert r.stages["stages"][-1]["kept"] is True


def test_a_refit_fitted_also_on_random_token_copies_reads_better_on_the_probe():
    """Asked to (compensate_augment=8), a token model's refit also fits 8 random-token copies
    of the calibration data (other seeds than the probe's): the probe, of the same
    construction, then reads better after it and it is kept, with a warning that the probe no
    longer judges it on text it did not fit. By default the refit fits the calibration data
    alone, and the probe undoes one that learns its style."""
    plain, _ = _run()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r = prune(token_model(), calib=templated(), ratio=0.5, compensate=True, criterion="l2",
                  compensate_augment=8)
    said = [str(w.message) for w in seen if "worse" in str(w.message)]
    rows = {row["stage"]: row for row in r.stages["stages"]}
    assert r.recovery["compensate_data"] == {"samples": 32 * 9, "copies": 8,
                                             "style": "random tokens"}
    assert rows["compensate"]["kept"] is True and not said
    assert any("no longer judges" in str(w.message) for w in seen)
    assert rows["compensate"]["probe"] > rows["pruned"]["probe"] + 0.05
    assert rows["compensate"]["heldout"] > rows["pruned"]["heldout"]
    undone = {row["stage"]: row for row in plain.stages["stages"]}["compensate"]
    assert undone["kept"] is False and undone["worse"] == ["probe"]
    assert rows["compensate"]["probe"] > undone["probe"] + 0.05
    assert "compensate_data" not in plain.recovery


def test_metrics_that_do_not_compare_with_the_original_get_no_probe(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def score(outputs, batch):\n    return float(-abs(outputs[0]).mean())\n")
    r = prune(token_model(), calib=templated(), ratio=0.5, criterion="l2",
              metric=f"{path}:score")
    assert "probe" not in r.stages["samples"]


def onnx_array(init):
    from onnx import numpy_helper

    return numpy_helper.to_array(init)


def test_the_cli_prints_the_probe_line_and_the_undone_stage(tmp_path, capsys):
    import onnx

    from onnxprune.cli.main import main
    from onnxprune.ir.arrays import save_npz

    onnx.save(token_model(), tmp_path / "m.onnx")
    save_npz(tmp_path / "c.npz", **templated())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"),
                     "--calib", str(tmp_path / "c.npz"), "--ratio", "0.5", "--criterion", "l2",
                     "--compensate", "--compensate-augment", "0", "--quiet"])
    text = capsys.readouterr().out
    assert code == 0 and (tmp_path / "o.onnx").is_file()
    line = next(x for x in text.splitlines() if "random-token probe samples" in x)
    assert line.startswith("cosine on 40 random-token probe samples: 1 (unpruned) -> ")
    assert "(compensate, undone)" in line
