"""Plans on disk: a saved cut reused by a later run gives the same model without a search;
a plan of another model is refused with the difference named."""

import json

import numpy as np
import onnx
import pytest

from onnxprune.api import prune
from onnxprune.cli.main import main
from onnxprune.errors import UsageError
from onnxprune.zoo.builder import GraphBuilder


def _mlp(width: int = 32, seed: int = 0) -> onnx.ModelProto:
    b = GraphBuilder(seed=seed)
    x = b.input("x", ["batch", 12])
    h = b.op("Relu", [b.gemm(x, 12, width, name="fc1")])
    h = b.op("Relu", [b.gemm(h, width, width, name="fc2")])
    return b.build([b.gemm(h, width, 6, name="fc3")])


def _data(n: int = 40) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(3).standard_normal((n, 12)).astype(np.float32)}


def _weights(path) -> dict[str, np.ndarray]:
    return {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}


def test_a_saved_plan_gives_the_same_cut_without_a_search(tmp_path):
    plan = tmp_path / "plan.json"
    first = prune(_mlp(), tmp_path / "a.onnx", calib=_data(), strategy="sensitivity",
                  target_params=0.5, save_plan=plan)
    data = json.loads(plan.read_text())
    assert data["format"] == "onnxprune-plan" and data["removed_channels"] == \
        first.plan.removed_units > 0
    assert data["selection"]["strategy"] == "sensitivity"
    again = prune(_mlp(), tmp_path / "b.onnx", calib=_data(), plan=plan)
    assert np.array_equal(again.plan.removed, first.plan.removed)
    assert again.selection["strategy"] == "plan"
    assert again.selection["planned"]["strategy"] == "sensitivity"
    assert "select" in again.timings and again.timings["select"] < first.timings["select"]
    a, b = _weights(tmp_path / "a.onnx"), _weights(tmp_path / "b.onnx")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_plan_then_recovery_on_the_same_cut(tmp_path):
    plan = tmp_path / "plan.json"
    first = prune(_mlp(), None, ratio=0.5, save_plan=plan)
    r = prune(_mlp(), tmp_path / "c.onnx", calib=_data(), plan=plan, compensate=True)
    assert np.array_equal(r.plan.removed, first.plan.removed)
    assert r.stages["stages"][-1]["stage"] == "compensate"


def test_a_plan_of_another_model_is_refused_naming_the_difference(tmp_path):
    plan = tmp_path / "plan.json"
    prune(_mlp(32), None, ratio=0.5, save_plan=plan)
    with pytest.raises(UsageError, match="made for another model: its group .* 32 channels"):
        prune(_mlp(16), None, plan=plan)


def test_a_plan_rejects_a_strategy_and_bad_files(tmp_path):
    plan = tmp_path / "plan.json"
    prune(_mlp(), None, ratio=0.5, save_plan=plan)
    with pytest.raises(UsageError, match="select.strategy"):
        prune(_mlp(), None, plan=plan, strategy="global")
    bad = tmp_path / "bad.json"
    bad.write_text('{"groups": []}')
    with pytest.raises(UsageError, match="not an onnxprune plan"):
        prune(_mlp(), None, plan=bad)
    bad.write_text("{")
    with pytest.raises(UsageError, match="invalid JSON"):
        prune(_mlp(), None, plan=bad)
    data = json.loads(plan.read_text())
    data["groups"][0]["removed"] = [10_000]
    bad.write_text(json.dumps(data))
    with pytest.raises(UsageError, match="out of range"):
        prune(_mlp(), None, plan=bad)


def test_the_cli_writes_and_reads_plans(tmp_path, capsys):
    onnx.save(_mlp(), tmp_path / "m.onnx")
    plan = tmp_path / "p.json"
    code = main(["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "a.onnx"),
                 "--save-plan", str(plan), "--quiet"])
    assert code == 0 and f"wrote plan {plan}" in capsys.readouterr().out
    code = main(["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "b.onnx"),
                 "--plan", str(tmp_path / "missing.json"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "missing.json: no such file" in err[0]
    assert not (tmp_path / "b.onnx").exists()
    code = main(["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "b.onnx"),
                 "--plan", str(plan), "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["selection"]["strategy"] == "plan"
