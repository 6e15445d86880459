"""Quality per stage on held-out data: the split, what the search sees, the stage figures,
and recovery steps that make held-out quality worse being undone."""

import numpy as np
import onnx
import pytest

from onnxprune.api import prune
from onnxprune.ir.arrays import Calibration
from onnxprune.ir.runtime import session
from onnxprune.pipeline.passes.data import split_holdout
from onnxprune.search.quality import cosine
from onnxprune.zoo.builder import GraphBuilder


def _mlp(seed: int = 0) -> onnx.ModelProto:
    b = GraphBuilder(seed=seed)
    x = b.input("x", ["batch", 12])
    h = b.op("Relu", [b.gemm(x, 12, 32, name="fc1")])
    h = b.op("Relu", [b.gemm(h, 32, 32, name="fc2")])
    return b.build([b.gemm(h, 32, 6, name="fc3")])


def _data(n: int = 50) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"x": rng.standard_normal((n, 12)).astype(np.float32),
            "labels": np.arange(n) % 6}


def test_the_split_is_disjoint_seeded_and_keeps_labels_with_their_samples():
    data = Calibration(_data(50))
    fit, held = split_holdout(data, 0.2, seed=4)
    assert (fit.samples, held.samples) == (40, 10)
    rows = {tuple(r) for r in fit["x"]} | {tuple(r) for r in held["x"]}
    assert len(rows) == 50  # every sample lands on exactly one side
    index = {tuple(r): i for i, r in enumerate(data["x"])}
    for part in (fit, held):  # each label still belongs to its sample
        assert [data["labels"][index[tuple(r)]] for r in part["x"]] == list(part["labels"])
    again, _ = split_holdout(data, 0.2, seed=4)
    other, _ = split_holdout(data, 0.2, seed=5)
    assert np.array_equal(again["x"], fit["x"]) and not np.array_equal(other["x"], fit["x"])


@pytest.mark.parametrize("n, fraction", [(4, 0.2), (50, 0.0), (3, 0.5)])
def test_no_split_when_a_share_would_be_tiny_or_none_is_asked(n, fraction):
    data = Calibration(_data(n))
    fit, held = split_holdout(data, fraction)
    assert held is None and fit.samples == n


def test_the_search_sees_only_the_fitted_share_and_stages_cover_both(tmp_path):
    r = prune(_mlp(), tmp_path / "o.onnx", calib=_data(50), strategy="sensitivity",
              target_params=0.4, holdout=0.3)
    assert r.quality["samples"] == 35  # the search's evaluator ran on the fitted share only
    s = r.stages
    assert s["samples"] == {"calib": 35, "heldout": 15}
    assert [row["stage"] for row in s["stages"]] == ["unpruned", "pruned"]
    unpruned, pruned = s["stages"]
    assert unpruned["calib"] == pytest.approx(1.0) and unpruned["heldout"] == pytest.approx(1.0)
    # the pruned figure on the fitted share is what the oracle measured for the cut
    assert pruned["calib"] == pytest.approx(r.quality["after"], abs=1e-5)
    # and the held-out figure is the written model's on the held-out samples: recompute it
    model, ref = onnx.load(tmp_path / "o.onnx"), _mlp()
    _, held = split_holdout(Calibration(_data(50)), 0.3)
    outs = session(model).run(None, {"x": held["x"]})
    base = session(ref).run(None, {"x": held["x"]})
    assert pruned["heldout"] == pytest.approx(cosine(outs, held, base), abs=1e-6)
    assert pruned["heldout"] < 1.0


def test_a_recovery_that_makes_held_out_quality_worse_is_undone(tmp_path):
    """Seven samples fitted by an unregularised refit of 16 inputs: the refit reproduces the
    original exactly on them (cosine 1) and generalises worse, so the pruned model before it
    is the one written, with a warning."""
    kw = dict(calib=_data(12), ratio=0.5, holdout=0.4, criterion="l2")
    plain = prune(_mlp(), tmp_path / "plain.onnx", **kw)
    with pytest.warns(UserWarning, match="compensate made cosine on the held-out data worse"):
        r = prune(_mlp(), tmp_path / "o.onnx", compensate=True, ridge=1e-9, **kw)
    rows = r.stages["stages"]
    assert [row["stage"] for row in rows] == ["unpruned", "pruned", "compensate"]
    assert rows[2]["calib"] == pytest.approx(1.0, abs=1e-9)  # what fitted data alone would say
    assert rows[2]["kept"] is False and rows[2]["heldout"] < rows[1]["heldout"]
    written = {i.name: onnx.numpy_helper.to_array(i)
               for i in onnx.load(tmp_path / "o.onnx").graph.initializer}
    expected = {i.name: onnx.numpy_helper.to_array(i)
                for i in onnx.load(tmp_path / "plain.onnx").graph.initializer}
    assert written.keys() == expected.keys()
    assert all(np.array_equal(written[k], expected[k]) for k in written)
    assert plain.stages["stages"][-1]["heldout"] == pytest.approx(rows[1]["heldout"])


def test_a_recovery_that_helps_is_kept(tmp_path):
    r = prune(_mlp(), tmp_path / "o.onnx", calib=_data(200), ratio=0.5, compensate=True)
    rows = r.stages["stages"]
    assert rows[-1]["stage"] == "compensate" and rows[-1]["kept"] is True
    assert rows[-1]["heldout"] >= rows[-2]["heldout"]


def test_the_cli_prints_one_line_per_data_set(tmp_path, capsys):
    from onnxprune.cli.main import main
    from onnxprune.ir.arrays import save_npz

    onnx.save(_mlp(), tmp_path / "m.onnx")
    save_npz(tmp_path / "c.npz", **_data(40))
    code = main(["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--calib",
                 str(tmp_path / "c.npz"), "--holdout", "0.25", "--quiet"])
    text = capsys.readouterr().out
    assert code == 0
    assert "cosine on 30 calibration samples: 1 (unpruned) -> " in text
    assert "cosine on 10 held-out samples: 1 (unpruned) -> " in text


def test_distillation_of_a_graph_its_interpreter_cannot_run_is_skipped_with_a_warning(tmp_path):
    """An op the training interpreter lacks (LpNormalization here; silero-vad's inner If) ends
    distillation before it starts: a warning, the model as compensation left it, written and
    verified (it was an internal error, exit 1, nothing written)."""
    import warnings

    b = GraphBuilder(seed=1)
    x = b.op("LpNormalization", [b.input("x", ["batch", 12])], axis=-1, p=2)
    h = b.op("Relu", [b.gemm(x, 12, 32, name="fc1")])
    model = b.build([b.gemm(h, 32, 6, name="fc2")])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r = prune(model, tmp_path / "m.onnx", ratio=0.5, calib=_data(40), metric="cosine",
                  recover="distill")
    said = [str(w.message) for w in seen if "distill: not run" in str(w.message)]
    assert said and "LpNormalization" in said[0]
    assert set(r.recovery["distill"]) == {"skipped"}
    assert r.verification.passed and (tmp_path / "m.onnx").is_file()
    assert r.params_after < r.params_before


def test_the_evaluator_closes_after_the_last_pass_that_runs_candidates(tmp_path, monkeypatch):
    """The search's evaluator (its sessions, the reference outputs) is open while a later pass
    may run candidates on it and closed after the last (verify), before recovery; the stages'
    reference outputs serve as distillation's targets there (not a second copy)."""
    import onnxprune.recover.distill_data as distill_data
    from onnxprune.pipeline.base import Context, Pass, PassResult
    from onnxprune.pipeline.build import prune_pipeline
    from onnxprune.pipeline.core import Pipeline

    seen: list[tuple[str, bool]] = []

    class Look(Pass):
        name = "look"

        def __init__(self, after: str):
            super().__init__()
            self.after = after

        def run(self, ctx):
            seen.append((self.after, ctx.resources.evaluator is not None))
            return PassResult(False)

    onnx.save(_mlp(), tmp_path / "m.onnx")
    passes, config = prune_pipeline(tmp_path / "m.onnx", tmp_path / "o.onnx", {
        "calib": _data(60), "holdout": 0.2, "strategy": "sensitivity", "target_params": 0.4,
        "compensate": True, "recover": "distill", "distill_steps": 4})
    for after in ("verify", "select"):
        passes.insert([p.name for p in passes].index(after) + 1, Look(after))
    given = []
    real = distill_data.Targets.__init__

    def spying(self, *a, **k):
        given.append(a[8])  # the teacher's outputs given
        return real(self, *a, **k)

    monkeypatch.setattr(distill_data.Targets, "__init__", spying)
    ctx = Context(config)
    Pipeline(passes)(ctx)
    assert seen == [("select", True), ("verify", False)]
    assert ctx.resources.evaluator is None and (tmp_path / "o.onnx").is_file()
    name = _mlp().graph.output[0].name
    assert len(given) == 1 and list(given[0]) == [name]
    assert given[0][name] is ctx.resources.references["calib"][0]
