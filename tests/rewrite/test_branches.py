"""Networks inside If branches the inputs choose at run time: opened for the analysis (both
branches side by side, a Where per output), pruned, closed again and verified branch by branch;
a weight both branches read is one group and one initializer."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis.size import graph_params
from onnxprune.api import prune
from onnxprune.errors import VerificationError
from onnxprune.ir.graph import export_model
from onnxprune.rewrite.branches import close_ifs, open_ifs
from onnxprune.rewrite.share import share_identical_constants

RNG = np.random.default_rng(0)


def _w(*shape) -> np.ndarray:
    return (RNG.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def _model(shared: bool = False, mismatch: bool = False) -> onnx.ModelProto:
    """y = If(sr == 16000, then: conv(relu) conv, else: conv(sigmoid) conv) on x; ``shared``:
    both first convolutions read one outer weight; ``mismatch``: the branches flatten x to
    widths no single image size gives both (192 and 48 values per sample)."""
    def branch(name: str, act: str, width: int):
        inits, nodes = [], []
        if mismatch:
            size = 192 if name == "then" else 48
            inits += [numpy_helper.from_array(np.array([-1, size], np.int64), f"{name}_shape"),
                      numpy_helper.from_array(_w(size, 4), f"{name}_fc")]
            nodes += [helper.make_node("Reshape", ["x", f"{name}_shape"], [f"{name}_flat"]),
                      helper.make_node("MatMul", [f"{name}_flat", f"{name}_fc"], [f"{name}_y"])]
        else:
            w1 = "w_shared" if shared else f"{name}_w1"
            if not shared:
                inits.append(numpy_helper.from_array(_w(width, 3, 3, 3), w1))
            inits.append(numpy_helper.from_array(_w(4, width, 3, 3), f"{name}_w2"))
            nodes += [
                helper.make_node("Conv", ["x", w1], [f"{name}_h"], pads=[1, 1, 1, 1],
                                 name=f"{name}_c1"),
                helper.make_node(act, [f"{name}_h"], [f"{name}_a"]),
                helper.make_node("Conv", [f"{name}_a", f"{name}_w2"], [f"{name}_y"],
                                 pads=[1, 1, 1, 1], name=f"{name}_c2")]
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(
            f"{name}_y", TensorProto.FLOAT, None)], inits)

    hw = ["H", "W"] if mismatch else [8, 8]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, *hw])
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                      ["N", 4] if mismatch else ["N", 4, 8, 8])
    inits = [numpy_helper.from_array(np.array(16000, np.int64), "k16")]
    if shared:
        inits.append(numpy_helper.from_array(_w(8, 3, 3, 3), "w_shared"))
    g = helper.make_graph([
        helper.make_node("Equal", ["sr", "k16"], ["is16"], name="eq"),
        helper.make_node("If", ["is16"], ["y"], name="if16",
                         then_branch=branch("then", "Relu", 8 if shared else 12),
                         else_branch=branch("else", "Sigmoid", 8 if shared else 6))], "branches", [x, sr], [y],
        inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _run(model, sr: int, n: int = 2, hw: int = 8) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model if isinstance(model, (str, bytes)) else model.SerializeToString()
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((n, 3, hw, hw)).astype(np.float32)
    return sess.run(None, {"x": x, "sr": np.array(sr, np.int64)})[0]


def _initializers(graph: onnx.GraphProto):
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _initializers(a.g)


@pytest.mark.parametrize("shared", [False, True])
def test_opened_and_closed_again_the_model_computes_what_it_did(shared):
    model = _model(shared=shared)
    want = {sr: _run(model, sr) for sr in (16000, 8000)}
    graph = gs.import_onnx(model)
    opened = open_ifs(graph)
    assert [o.name for o in opened] == ["if16"] and not any(n.op == "If" for n in graph.nodes)
    flat = export_model(graph)
    for sr in want:  # both branches computed, the Where picks the one the If took
        np.testing.assert_array_equal(_run(flat, sr), want[sr])
    close_ifs(graph, opened)
    back = export_model(graph)
    onnx.checker.check_model(back)
    assert [n.op_type for n in back.graph.node if n.op_type != "Identity"] == ["Equal", "If"]
    for sr in want:
        np.testing.assert_array_equal(_run(back, sr), want[sr])
    if shared:  # one array, in the graph around the branches
        assert [i.name for i in _initializers(back.graph) if list(i.dims) == [8, 3, 3, 3]] == [
            "w_shared"]


def test_both_branches_are_pruned_and_the_written_model_keeps_the_if(tmp_path):
    model = _model()
    r = prune(model, tmp_path / "o.onnx", ratio=0.5)
    assert r.verification.passed and r.params_after < r.params_before == graph_params(
        gs.import_onnx(model))
    out = onnx.load(str(r.output))
    assert [n.op_type for n in out.graph.node] == ["Equal", "If"]
    widths = {i.name.split("/")[-1]: list(i.dims) for i in _initializers(out.graph)}
    assert widths["then_w1"][0] == 6 and widths["else_w1"][0] == 3  # 12 -> 6, 6 -> 3
    for sr in (16000, 8000):  # each branch runs, at another batch than verified
        assert _run(str(r.output), sr, n=3).shape == (3, 4, 8, 8)


def test_a_weight_both_branches_read_is_one_group_and_stored_once(tmp_path):
    r = prune(_model(shared=True), tmp_path / "o.onnx", ratio=0.5)
    assert r.verification.passed
    out = onnx.load(str(r.output))
    firsts = [i for i in _initializers(out.graph) if list(i.dims)[1:] == [3, 3, 3]]
    assert len(firsts) == 1 and firsts[0].dims[0] == 4  # cut once for both readers
    seconds = {i.name: list(i.dims) for i in _initializers(out.graph) if i.name.endswith("w2")}
    assert all(d[1] == 4 for d in seconds.values()) and len(seconds) == 2
    assert sum(int(np.prod(i.dims)) for i in _initializers(out.graph)) <= r.params_before


def test_verification_checks_the_branch_the_inputs_do_not_take(monkeypatch, tmp_path):
    """A cut that breaks the branch no verification input chooses (sr is random there) is
    still caught: each branch is verified with the condition forced."""
    from onnxprune.pipeline.passes import removal

    removal_run = removal.RemoveChannels.run

    def breaks_then(self, ctx):
        result = removal_run(self, ctx)
        for node in ctx.graph.nodes:
            if node.name.endswith("then_c2"):
                node.inputs[1].values = node.inputs[1].values * 1.5
        return result

    monkeypatch.setattr(removal.RemoveChannels, "run", breaks_then)
    with pytest.raises(VerificationError, match="then branch of if16"):
        prune(_model(), tmp_path / "o.onnx", ratio=0.5)
    assert not (tmp_path / "o.onnx").exists()


def test_branches_that_never_run_on_the_same_inputs_stay_whole(tmp_path, recwarn):
    model = _model(mismatch=True)
    r = prune(model, tmp_path / "o.onnx", ratio=0.5, input_shapes={"x": [2, 3, 8, 8]})
    assert any("is kept whole" in str(w.message) and "--input-value" in str(w.message)
               for w in recwarn)
    out = onnx.load(str(r.output))
    assert [n.op_type for n in out.graph.node] == ["Equal", "If"]
    assert r.params_after == r.params_before


def test_what_folding_copies_into_each_branch_is_one_constant_again():
    """Two branches that each fold the same computation on one weight hold equal arrays:
    shared again inside bodies; equal weights of the graph itself stay apart (their channels
    may be cut differently)."""
    a, b = gs.Constant("a", np.ones((5, 5), np.float32)), gs.Constant("b", np.ones((5, 5),
                                                                                  np.float32))
    x = gs.Variable("x", np.float32, [5, 5])
    subs = []
    for name in ("then", "else"):
        c = gs.Constant(f"{name}_c", np.full((5, 5), 2.0, np.float32))
        out = gs.Variable(f"{name}_out", np.float32)
        subs.append(gs.Graph(nodes=[gs.Node("MatMul", inputs=[x, c], outputs=[out])],
                             outputs=[out]))
    ya, yb, yc = (gs.Variable(n, np.float32) for n in ("ya", "yb", "yc"))
    cond = gs.Variable("cond", np.bool_, [])
    graph = gs.Graph(nodes=[gs.Node("MatMul", inputs=[x, a], outputs=[ya]),
                            gs.Node("MatMul", inputs=[x, b], outputs=[yb]),
                            gs.Node("If", inputs=[cond], outputs=[yc], attrs={
                                "then_branch": subs[0], "else_branch": subs[1]})],
                     inputs=[x, cond], outputs=[ya, yb, yc], opset=17)
    assert graph_params(graph) == 100  # two branch copies counted apart
    assert share_identical_constants(graph, branches_only=True) == 1
    assert graph_params(graph) == 75 and graph.nodes[1].inputs[1] is b
    model = export_model(graph)
    assert sorted(i.name for i in _initializers(model.graph)) == ["a", "b", "then_c"]
    assert graph.nodes[2].attrs["else_branch"].nodes[0].inputs[1].name == "then_c"
    assert not any(n.op == "Identity" for n in graph.nodes)  # the export left no trace


def test_a_search_on_calibration_data_is_told_it_measures_one_branch(tmp_path, recwarn):
    """Calibration data takes one branch: a data-driven search would read the other's channels
    as free. Said once; the pruned model still verifies in both branches."""
    r = prune(_model(), tmp_path / "o.onnx", target_params=0.3, strategy="sensitivity",
              calib_random=16)
    said = [str(w.message) for w in recwarn if "opened to prune both branches" in
            str(w.message)]
    assert len(said) == 1 and "--input-value" in said[0]
    assert r.verification.passed


def test_the_macs_after_count_both_branches_as_the_macs_before_do(tmp_path):
    r = prune(_model(), tmp_path / "o.onnx", ratio=0.5)
    assert 0 < r.macs_after < r.macs_before  # not 0 (counting does not enter the If)
