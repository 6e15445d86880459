"""Keeping only some classes of an output: the layer's rows go, the output keeps its shape and
numbering, the kept classes compute what the original does (renormalized by a Softmax), the
removed ones read an exact fill; the run checks it, and parameter targets count from the
model before."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest

from onnxprune.api import prune
from onnxprune.cli.main import main
from onnxprune.errors import VerificationError
from onnxprune.rewrite import classes as rc
from onnxprune.rewrite.classes import keep_classes, parse_classes
from onnxprune.verify.compare import check_outputs, max_diffs
from onnxprune.zoo.builder import GraphBuilder

LOWEST = float(np.finfo(np.float32).min)


def _head(tail: str = "Softmax", classes: int = 40, layer: str = "gemm") -> onnx.ModelProto:
    """x -> fc -> relu -> (the classes' layer) [-> tail]: a classifier with a wide head."""
    b = GraphBuilder(seed=1)
    x = b.input("x", ["batch", 12])
    h = b.op("Relu", [b.gemm(x, 12, 24, name="fc1")])
    if layer == "gemm":
        z = b.gemm(h, 24, classes, name="head")
    else:  # MatMul + Add bias, a scale Mul: per-class ops with constants
        z = b.op("Add", [b.matmul(h, 24, classes, name="head"),
                         b.const(np.linspace(-1, 1, classes).astype(np.float32), "bias")])
        z = b.op("Mul", [z, b.const(np.float32(2.0), "scale")])
    if tail:
        z = b.op(tail, [z], axis=-1) if tail in ("Softmax", "LogSoftmax") else b.op(tail, [z])
    return b.build([z])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def _trim(model: onnx.ModelProto, kept) -> tuple[onnx.ModelProto, rc.Trimmed]:
    g = gs.import_onnx(model)
    t = keep_classes(g, g.outputs[0].name, kept)
    out = gs.export_onnx(g)
    out.ir_version = model.ir_version
    onnx.checker.check_model(out, full_check=True)
    return out, t


X = np.random.default_rng(0).standard_normal((16, 12)).astype(np.float32)


def test_class_specs_parse_ranges_lists_and_refuse_nonsense():
    assert parse_classes("0-3, 7 9-9") == (0, 1, 2, 3, 7, 9)
    assert parse_classes([5, 1, 5]) == (1, 5)
    for bad, why in (("x", "not a class index"), ("5-2", "low-high"), ("", "no class"),
                     ("-3", "not a class index")):
        with pytest.raises(ValueError, match=why):
            parse_classes(bad)


@pytest.mark.parametrize("tail,layer", [("Softmax", "gemm"), ("", "gemm"),
                                        ("LogSoftmax", "matmul"), ("Sigmoid", "matmul")])
def test_kept_classes_compute_the_original_and_the_others_read_the_fill(tail, layer):
    model = _head(tail, layer=layer)
    kept = [0, 3, 4, 5, 17, 39]
    trimmed, t = _trim(model, kept)
    want, got = _run(model, X), _run(trimmed, X)
    assert got.shape == want.shape == (16, 40)
    gone = np.setdiff1d(np.arange(40), kept)
    fill = {"Softmax": 0.0, "Sigmoid": 0.0, "": None, "LogSoftmax": None}[tail]
    assert t.fill == fill
    if fill is None:  # scores: below every kept class by the margin, per sample
        low = got[:, kept].min(1, keepdims=True) - np.float32(rc.MARGIN)
        assert np.all(got[:, gone] == low) and np.all(np.isfinite(got))
        assert np.array_equal(got.argmax(1), np.asarray(kept)[got[:, kept].argmax(1)])
    else:
        assert np.all(got[:, gone] == np.float32(fill))
    a, b = want[:, kept].astype(np.float64), got[:, kept].astype(np.float64)
    if tail == "Softmax":  # the original renormalized over the kept classes
        a = a / a.sum(1, keepdims=True)
        assert np.allclose(b.sum(1), 1.0, atol=1e-6)
    if tail == "LogSoftmax":
        a = a - np.log(np.exp(a).sum(1, keepdims=True))
    assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(a).max())
    # the head's rows of the removed classes are gone: 24 weights + 1 bias per class (a
    # fill other than Pad's default 0, or the margin, is one constant)
    assert t.params_removed == 34 * 25 - (fill != 0.0) and t.kept == 6 and t.classes == 40
    # the argmax of every row whose best class is kept is the same
    best = want.argmax(1)
    rows = np.isin(best, kept)
    assert rows.any() and np.array_equal(got.argmax(1)[rows], best[rows])


def test_a_class_axis_1_conv_head_loses_its_filters():
    b = GraphBuilder(seed=2)
    x = b.input("x", ["batch", 3, 8, 8])
    y = b.op("Sigmoid", [b.conv(b.relu(b.conv(x, 3, 8)), 8, 20, k=1, name="head")])
    model = b.build([y])
    trimmed, t = _trim(model, "2-5")
    xs = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(model.SerializeToString(), so).run(None, {"x": xs})[0]
    got = ort.InferenceSession(trimmed.SerializeToString(), so).run(None, {"x": xs})[0]
    assert t.axis == 1 and got.shape == want.shape
    assert np.abs(got[:, 2:6] - want[:, 2:6]).max() <= 1e-6
    assert np.all(got[:, :2] == 0) and np.all(got[:, 6:] == 0)
    assert t.params_removed == 16 * (8 + 1)


def test_what_cannot_lose_classes_is_refused_with_the_reason():
    with pytest.raises(rc.ClassError, match="class 40 does not exist"):
        _trim(_head(), "0-40")
    with pytest.raises(rc.ClassError, match="every one of the 40 classes"):
        _trim(_head(), "0-39")
    b = GraphBuilder(seed=1)  # a Transpose between the head and the output
    x = b.input("x", ["batch", 12])
    z = b.op("Transpose", [b.gemm(x, 12, 10, name="head")], perm=[1, 0])
    with pytest.raises(rc.ClassError, match="Transpose node .* not a per-class op"):
        _trim(b.build([z]), "0-3")
    b = GraphBuilder(seed=1)  # tied weights: another layer reads the head's matrix
    x = b.input("x", ["batch", 12])
    w = b.const(np.ones((12, 10), np.float32), "tied")
    outs = [b.op("Softmax", [b.op("MatMul", [x, w], name="head")], axis=-1),
            b.op("MatMul", [x, w], name="other")]
    with pytest.raises(rc.ClassError, match="read by other too"):
        _trim(b.build(outs), "0-3")
    b = GraphBuilder(seed=1)  # the logits are read by a second output too
    x = b.input("x", ["batch", 12])
    z = b.gemm(x, 12, 10, name="head")
    with pytest.raises(rc.ClassError, match="also read by"):
        _trim(b.build([b.op("Softmax", [z], axis=-1), z]), "0-3")


def test_sentinel_fills_neither_loosen_nor_break_the_comparison():
    want = np.array([[1.0, LOWEST, 2.0]], np.float32)
    assert check_outputs([want.copy()], [want])[0].passed
    assert max_diffs([want.copy()], [want]) == (0.0, 0.0)
    off = want.copy()
    off[0, 0] += 1e-3  # would pass against a tolerance scaled by the fill's 3.4e38
    check = check_outputs([off], [want])[0]
    assert not check.passed and check.scale == 2.0
    moved = want.copy()
    moved[0, 1] = 0.0
    assert not check_outputs([moved], [want])[0].passed
    assert max_diffs([moved], [want])[0] == np.inf


def test_a_run_counts_the_target_from_the_model_before_and_measures_against_it(tmp_path):
    model = _head(classes=400)  # the head holds 25 x 400 of 10,312 parameters
    calib = {"x": np.random.default_rng(2).standard_normal((60, 12)).astype(np.float32)}
    out = tmp_path / "small.onnx"
    r = prune(model, out, keep_classes="0-99", target_params=0.5, strategy="sensitivity",
              calib=calib, metric="cosine")
    assert r.classes["kept"] == 100 and r.classes["params_removed"] == 300 * 25  # fill 0
    assert r.params_before == 12 * 24 + 24 + 24 * 400 + 400  # the input model's
    assert r.params_after <= 0.5 * r.params_before + 25  # classes + channels reach it
    assert r.plan.removed_units == 0  # the classes alone removed more than half
    assert r.selection["target_after_trim"] == 0.0
    # quality is measured against the model with every class: cosine < 1 on the kept
    # distribution, the value computed independently on the held-out share
    written = onnx.load(out)
    assert [o.name for o in written.graph.output] == [o.name for o in model.graph.output]
    rows = {s["stage"]: s for s in r.stages["stages"]}
    assert rows["unpruned"]["calib"] == pytest.approx(1.0, abs=1e-6)
    # the trim's own cost is a stage of its own; no channel was cut after it
    assert rows["classes"]["calib"] < 0.999
    assert rows["pruned"]["calib"] == pytest.approx(rows["classes"]["calib"], abs=1e-6)
    a, b = _run(model, calib["x"]), _run(written, calib["x"])
    assert a.shape == b.shape == (60, 400)
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert 0.1 < cos.mean() < 0.999
    # a smaller head cut leaves the channels the rest of the target
    r2 = prune(model, tmp_path / "b.onnx", keep_classes="0-349", target_params=0.3,
               calib=calib)
    assert r2.plan.removed_units > 0 and r2.params_after <= 0.7 * r2.params_before + 50
    assert 0 < r2.selection["target_after_trim"] < 0.3
    # a MAC target counts from the model before as well (the head is most of the MACs here)
    r3 = prune(model, None, keep_classes="0-299", target_macs=0.4, strategy="global",
               calib=calib)
    assert 0 < r3.selection["target_after_trim"] < 0.4 and r3.plan.removed_units > 0
    assert r3.macs_after <= 0.6 * r3.macs_before * 1.02


def test_a_broken_trim_is_caught_before_anything_is_written(tmp_path, monkeypatch):
    real = rc._cut_layer

    def wrong_rows(graph, layer, keep):  # slices the classes next to the kept ones
        real(graph, layer, np.minimum(keep + 1, 39))

    monkeypatch.setattr(rc, "_cut_layer", wrong_rows)
    out = tmp_path / "small.onnx"
    with pytest.raises(VerificationError, match="keeping classes of .* broke it"):
        prune(_head(), out, keep_classes="0-9", ratio=0.2)
    assert not out.exists()


def test_the_command_line_names_bad_class_specs_in_one_line(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(_head(), src)
    before = src.read_bytes()
    spec = tmp_path / "keep.txt"
    spec.write_text("0-4\n7\n")
    assert main(["prune", str(src), "-o", str(tmp_path / "a.onnx"), "--keep-classes",
                 str(spec), "--ratio", "0.2", "--json", "--report", str(tmp_path / "rep")]) == 0
    assert '"kept": 6' in capsys.readouterr().out
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "classes kept" in html and "6 of the 40" in html
    for args, why in ((["--keep-classes", "0-99"], "class 99 does not exist"),
                      (["--keep-classes", "a"], "not a class index"),
                      (["--keep-classes", "0-3", "--keep-classes-output", "y"], "no output 'y'")):
        assert main(["prune", str(src), "-o", str(tmp_path / "b.onnx"), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0] and "--keep-classes" in err[0]
        assert not (tmp_path / "b.onnx").exists()
    assert src.read_bytes() == before
    with pytest.warns(UserWarning, match="keep_classes_output: no effect without keep_classes"):
        prune(_head(), None, keep_classes_output="y", ratio=0.1)


def test_analyze_names_the_outputs_whose_classes_could_go(tmp_path, capsys):
    from onnxprune.api import analyze

    model = _head(classes=400)
    heads = analyze(model).class_heads
    assert heads == ({"output": model.graph.output[0].name, "classes": 400, "layer": "head",
                      "params": 24 * 400 + 400},)
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    assert main(["analyze", str(src)]) == 0
    out = capsys.readouterr().out
    assert "its 400 classes come from head (10,000 parameters, 97% of the model)" in out
    b = GraphBuilder(seed=1)  # no layer computes the output's classes: nothing named
    x = b.input("x", ["batch", 12])
    assert analyze(b.build([b.op("Transpose", [b.gemm(x, 12, 10)], perm=[1, 0])])).class_heads \
        == ()
