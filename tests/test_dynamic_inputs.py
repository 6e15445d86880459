"""Models with dynamic dimensions, pinned inputs and networks inside If: shapes chosen without
flags and verified at two sizes, pins that select a branch, constant-condition Ifs inlined."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxprune.api import prune
from onnxprune.errors import UsageError, VerificationError
from onnxprune.ir.runtime import session
from onnxprune.ir.shapes import CANDIDATES, choose_shapes, input_specs, parse_values
from onnxprune.zoo.builder import GraphBuilder


def conv_net(stride_total: int = 4):
    """A fully convolutional net over any height/width divisible by its total stride."""
    b = GraphBuilder(seed=0)
    x = b.input("x", ["batch", 3, "h", "w"])
    h = b.relu(b.conv(x, 3, 16, stride=2, name="c1"))
    h = b.relu(b.conv(h, 16, 24, stride=stride_total // 2, name="c2"))
    up = b.op("Resize", [h, "", b.const(np.array([1, 1, stride_total, stride_total],
                                                 np.float32))], mode="nearest")
    return b.build([b.conv(up, 24, 2, k=1, name="head")], "fcn")


def test_shapes_are_chosen_and_verified_at_two_sizes(tmp_path):
    r = prune(conv_net(), tmp_path / "o.onnx", ratio=0.5)
    shapes = [s["x"] for s in r.verification.shapes]
    assert shapes == [[1, 3, CANDIDATES[0], CANDIDATES[0]], [2, 3, CANDIDATES[1], CANDIDATES[1]]]
    assert r.verification.passed and r.params_after < r.params_before
    assert r.macs_before > 10 * r.params_before  # counted at 32x32, not per pixel


def test_given_shapes_override(tmp_path):
    r = prune(conv_net(), ratio=0.5, input_shapes=["x=1x3x40x48"])
    assert [s["x"] for s in r.verification.shapes] == [[1, 3, 40, 48]]


def test_the_first_sizes_the_model_accepts(tmp_path):
    """A net whose sizes must be multiples of 64 (an exact Reshape to 8x8 tiles): the chooser
    skips the sizes it rejects."""
    m = conv_net(stride_total=4)
    sess = session(m)

    def runs(feeds):
        if feeds["x"].shape[2] % 64:
            return False
        sess.run(None, feeds)
        return True

    sets = choose_shapes(m, runs=runs)
    assert [s["x"][2] for s in sets] == [64, 128] and [s["x"][0] for s in sets] == [1, 2]
    with pytest.raises(UsageError, match="--input-shape"):
        choose_shapes(m, runs=lambda feeds: False)


def test_an_input_a_layer_contracts_takes_the_size_it_accepts(recwarn):
    """An image beside a fixed-size vector declared [N, D]: D feeds a Gemm of 32 inputs (through
    a Relu), so it is 32 in every set while the image takes two sizes; verified at both sets
    (the vector took the image's sizes and every second set failed, verified at one)."""
    from onnxprune.ir.shapes import fixed_sizes

    b = GraphBuilder(seed=0)
    x, v = b.input("image", ["N", 3, "H", "W"]), b.input("bits", ["N", "D"])
    h = b.op("Flatten", [b.op("GlobalAveragePool", [b.relu(b.conv(x, 3, 8, name="c1"))])],
             axis=1)
    g = b.gemm(b.relu(v), 32, 8, name="fcv")
    m = b.build([b.gemm(b.relu(b.op("Add", [h, g])), 8, 4, name="head")])
    assert fixed_sizes(m) == {"D": 32}
    sets = choose_shapes(m)
    assert [s["bits"] for s in sets] == [[1, 32], [2, 32]]
    assert [s["image"][2] for s in sets] == [CANDIDATES[0], CANDIDATES[1]]
    r = prune(m, ratio=0.5)
    assert r.verification.passed and len(r.verification.shapes) == 2
    assert not [w for w in recwarn if "one set of input shapes" in str(w.message)]


def test_shapes_whose_activations_would_not_fit_are_refused_before_they_run(monkeypatch):
    """The chooser's runner sizes shapes far larger than the first it tried (shape inference)
    and refuses one whose activations exceed the search budget without running it."""
    from onnxprune.pipeline.support import inputs
    from onnxprune.search.memory import activation_bytes

    m = conv_net()
    at = {n: {"x": np.zeros((1, 3, n, n), np.float32)} for n in (32, 64, 128)}
    monkeypatch.setattr(inputs, "search_budget", lambda: activation_bytes(m, at[64]) * 2)
    runs = inputs._runner(m)
    assert runs(at[32]) and runs(at[64])  # 4x the first: run without sizing
    assert not runs(at[128])  # 16x: sized first, over the budget, never run
    assert inputs._runner(m)(at[128])  # the model does run there (as a first try)


def test_batch_axes_are_found():
    b = GraphBuilder(seed=0)
    ins = [b.input("x", ["batch", "seq"]), b.input("state", [2, "batch", 8]),
           b.input("sr", []), b.input("fixed", [1, 4])]
    m = b.build([b.op("Identity", [i]) for i in ins], "io")
    axes = {s.name: s.batch_axis for s in input_specs(m)}
    assert axes == {"x": 0, "state": 1, "sr": None, "fixed": 0}


def branching_model():
    """A network inside an If on a sample-rate input (as a voice-activity model keeps it): the
    'then' branch (sr == 16000) is a conv net, 'else' another; one branch output is also read
    inside the branch, another passes the outer input through."""
    def branch(name, cout, seed):
        b = GraphBuilder(seed=seed)
        h = b.relu(b.conv("x", 3, cout, name=f"{name}_c1"))
        y = b.conv(h, cout, 4, name=f"{name}_c2")
        z = b.op("Add", [y, b.const(np.float32(1.0))], name=f"{name}_add")  # reads y too
        xs = b.op("Identity", ["x"], name=f"{name}_x")  # the outer input passed through
        return helper.make_graph(b.nodes, name, [], [
            helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in (y, z, xs)],
            b.inits)

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    nodes = [
        helper.make_node("Equal", ["sr", "k16"], ["is16"], name="eq"),
        helper.make_node("If", ["is16"], ["y", "z", "xs"], name="if16",
                         then_branch=branch("then", 12, 0), else_branch=branch("else", 6, 1)),
        helper.make_node("ReduceMean", ["xs"], ["xs_mean"], name="mean", axes=[1, 2, 3],
                         keepdims=1),
        helper.make_node("Mul", ["z", "xs_mean"], ["out"], name="mul"),
    ]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4, 8, 8])
            for n in ("y", "out")]
    g = helper.make_graph(nodes, "vad", [x, sr], outs,
                          [onnx.numpy_helper.from_array(np.array(16000, np.int64), "k16")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_a_pinned_input_opens_the_network_inside_an_if(tmp_path):
    model = branching_model()
    r = prune(model, tmp_path / "o.onnx", ratio=0.5, input_values=["sr=16000"])
    assert r.verification.passed and r.params_after < r.params_before
    assert all(s["sr"] == [] for s in r.verification.shapes)
    out = onnx.load(str(r.output))
    assert [i.name for i in out.graph.input] == ["x", "sr"]  # the interface is unchanged
    assert not any(n.op_type == "If" for n in out.graph.node)
    import onnxruntime as ort

    got = ort.InferenceSession(str(r.output)).run(None, {
        "x": np.ones((2, 3, 8, 8), np.float32), "sr": np.array(8000)})
    assert got[0].shape == (2, 4, 8, 8)  # (it computes the pinned branch whatever sr says)


def test_analyze_says_which_input_decides_the_branches(tmp_path, capsys):
    from onnxprune.cli.main import main

    path = tmp_path / "vad.onnx"
    onnx.save(branching_model(), path)
    assert main(["analyze", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "If node if16 (its branch chosen by input sr): both branches are analyzed" in out
    assert "--input-value sr=VALUE prunes only the branch that value takes" in out
    assert main(["analyze", str(path), "--json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["opened_branches"] == {"if16": ["sr"]}


def test_pins_are_typed_and_checked():
    m = branching_model()
    assert parse_values(["sr=16000"], m)["sr"].dtype == np.int64
    assert parse_values({"sr": 8000}, m)["sr"].shape == ()
    with pytest.raises(UsageError, match="no input of that name"):
        parse_values(["rate=1"], m)
    with pytest.raises(UsageError, match="expected numbers"):
        parse_values(["sr=fast"], m)


def test_shape_with_a_range_folds_right(tmp_path):
    """Shape(x, start=1, end=2) (dynamo exports of static models) folds to [seq], not to the
    whole shape."""
    b = GraphBuilder(seed=0, opset=17)
    x = b.input("x", [2, 5, 16])
    h = b.relu(b.op("MatMul", [x, b.weight(16, 8, hint="w")], name="fc"))
    seq = b.op("Shape", [x], start=1, end=2)
    target = b.op("Concat", [b.const(np.array([2], np.int64)), seq,
                             b.const(np.array([8], np.int64))], axis=0)
    y = b.op("Reshape", [h, target], name="rs")
    r = prune(b.build([b.op("MatMul", [y, b.weight(8, 3, hint="w2")], name="fc2")]), ratio=0.5)
    assert r.verification.passed and r.params_after < r.params_before


def test_a_normalization_step_that_breaks_the_model_is_named(monkeypatch):
    import onnx_graphsurgeon as gs

    from onnxprune.pipeline.passes import frontend

    def breaks(self, ctx):  # a weight of the wrong shape: the model no longer runs
        conv = next(n for n in ctx.graph.nodes if n.op == "Conv")
        conv.inputs[1] = gs.Constant("broken_w", np.zeros((16, 5, 3, 3), np.float32))
        return frontend.PassResult(False)

    monkeypatch.setattr(frontend.DropIdentity, "run", breaks)
    with pytest.raises(VerificationError, match="normalization step 'drop-identity' broke"):
        prune(conv_net(), ratio=0.5)


def stateful_model():
    """Samples along axis 0 of x, axis 1 of a recurrent-style state, a scalar rate."""
    b = GraphBuilder(seed=0, opset=17)
    x = b.input("x", ["batch", 16])
    state = b.input("state", [2, "batch", 24])
    sr = b.input("sr", [])
    h = b.relu(b.op("MatMul", [x, b.weight(16, 24, hint="w1")], name="fc1"))
    s = b.op("ReduceMean", [state], axes=[0], keepdims=0, name="smean")
    h = b.op("Add", [h, b.op("MatMul", [s, b.weight(24, 24, hint="ws")], name="fcs")],
             name="mix")
    y = b.op("MatMul", [h, b.weight(24, 4, hint="w2")], name="fc2")
    rate = b.op("Div", [b.op("Cast", [sr], to=TensorProto.FLOAT), b.const(np.float32(16000))])
    m = b.build([b.op("Mul", [y, rate], name="scale")], "stateful")
    sr_vi = next(i for i in m.graph.input if i.name == "sr")
    sr_vi.type.tensor_type.elem_type = TensorProto.INT64
    return m


def test_calibration_with_per_input_sample_axes(tmp_path):
    rng = np.random.default_rng(0)
    calib = tmp_path / "c.npz"
    np.savez(calib, x=rng.standard_normal((6, 16)).astype(np.float32),
             state=rng.standard_normal((2, 6, 24)).astype(np.float32), sr=np.array(16000))
    for kw in ({"criterion": "activation"}, {"strategy": "sensitivity", "target_params": 0.3},
               {"compensate": True}):
        r = prune(stateful_model(), ratio=0.5, calib=str(calib), **kw)
        assert r.verification.passed and r.params_after < r.params_before, kw
        assert r.quality["samples"] == 6
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((6, 16), np.float32), state=np.zeros((2, 5, 24), np.float32),
             sr=np.array(16000))
    with pytest.raises(UsageError, match="disagree on the number of samples"):
        prune(stateful_model(), ratio=0.5, calib=str(bad))
    with pytest.raises(UsageError, match=r"samples along axis 1"):
        prune(stateful_model(), ratio=0.5, calib={"x": np.zeros((6, 16), np.float32),
                                                  "state": np.zeros((6, 2, 24), np.float32),
                                                  "sr": np.array(16000)})


def test_a_pinned_input_needs_no_calibration_array():
    rng = np.random.default_rng(0)
    r = prune(stateful_model(), ratio=0.5, input_values={"sr": 8000}, criterion="activation",
              calib={"x": rng.standard_normal((4, 16)).astype(np.float32),
                     "state": rng.standard_normal((2, 4, 24)).astype(np.float32)})
    assert r.verification.passed and all(s["sr"] == [] for s in r.verification.shapes)


def test_bench_chooses_shapes_and_feeds_pins(tmp_path):
    from onnxprune.bench.runner import run_bench

    report = run_bench([conv_net()], providers=["cpu"], batches=[1], repeat=2, warmup=0)
    assert report.rows[0].macs > 0 and report.settings["input_shapes"]["x"][2] == CANDIDATES[0]
    report = run_bench([stateful_model()], providers=["cpu"], batches=[1], repeat=2, warmup=0,
                       input_values=["sr=16000"])
    assert report.settings["input_values"] == {"sr": 16000} and report.rows[0].runs == 2


def test_one_set_of_shapes_for_a_dynamic_model_is_said(monkeypatch, recwarn):
    """Verification at a single set of shapes of a model with dynamic sizes is a weaker proof:
    the run says so (unless the shapes were given)."""
    from onnxprune.pipeline.support import inputs

    real = inputs.choose_shapes
    monkeypatch.setattr(inputs, "choose_shapes", lambda *a, **k: real(*a, **k)[:1])
    r = prune(conv_net(), ratio=0.5)
    assert len(r.verification.shapes) == 1
    said = [str(w.message) for w in recwarn]
    assert any(m.startswith("verification ran at one set of input shapes (x 1x3x") for m in said)
    monkeypatch.undo()
    recwarn.clear()
    prune(conv_net(), ratio=0.5)  # two sets: nothing said
    prune(conv_net(), ratio=0.5, input_shapes=["x=1x3x40x48"])  # given: nothing said
    assert not [w for w in recwarn if "one set of input shapes" in str(w.message)]
