"""Running only the nodes that compute the tensors asked for (ir.runtime.computing)."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.ir.runtime import computing, session
from onnxprune.ir.weights import Skeleton, to_skeleton


def _two_branch_model():
    """x -> MatMul(w1) -> Relu -> h;  [h, y] -> Concat -> MatMul(w2) -> out (weights over
    64 KB: a skeleton holds them apart)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3000)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((3003, 8)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]),
             helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("Concat", ["h", "y"], ["c"], axis=1),
             helper.make_node("MatMul", ["c", "w2"], ["out"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8]),
                     helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _full(model, names, feeds):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    return session(m).run(names, feeds)


def test_only_the_nodes_computing_the_names_stay_and_compute_the_same():
    model = _two_branch_model()
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((5, 8)).astype(np.float32),
             "y": rng.standard_normal((5, 3)).astype(np.float32)}
    cut = computing(model, ["h"])
    assert [n.op_type for n in cut.graph.node] == ["MatMul", "Relu"]
    assert [i.name for i in cut.graph.input] == ["x"]
    assert [i.name for i in cut.graph.initializer] == ["w1"]
    got = session(cut).run(["h"], {"x": feeds["x"]})[0]
    assert np.array_equal(got, _full(model, ["h"], feeds)[0])
    both = computing(model, ["a", "out"])  # the whole graph, two outputs
    assert len(both.graph.node) == 4 and [o.name for o in both.graph.output] == ["a", "out"]
    for g, w in zip(session(both).run(None, feeds), _full(model, ["a", "out"], feeds),
                    strict=True):
        assert np.array_equal(g, w)


def test_a_skeleton_keeps_the_arrays_its_nodes_read():
    sk = to_skeleton(_two_branch_model())
    assert set(sk.arrays) == {"w1", "w2"}  # both large enough to live apart
    cut = computing(sk, ["h"])
    assert isinstance(cut, Skeleton) and set(cut.arrays) == {"w1"}
    x = np.ones((2, 8), np.float32)
    assert session(cut).run(["h"], {"x": x})[0].shape == (2, 3000)


def test_a_subgraph_keeps_the_outer_tensors_it_reads():
    """An If branch reads t = x + 1 from the outer graph: t's producer stays."""
    one = numpy_helper.from_array(np.ones(2, np.float32), "one")
    then = helper.make_graph([helper.make_node("Identity", ["t"], ["r"])], "then", [],
                             [helper.make_tensor_value_info("r", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Neg", ["t"], ["r2"])], "else", [],
                              [helper.make_tensor_value_info("r2", TensorProto.FLOAT, [2])])
    nodes = [helper.make_node("Add", ["x", "one"], ["t"]),
             helper.make_node("Mul", ["x", "x"], ["unused"]),
             helper.make_node("If", ["cond"], ["z"], then_branch=then, else_branch=other)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
                     helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("unused", TensorProto.FLOAT, [2])], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    cut = computing(model, ["z"])
    assert [n.op_type for n in cut.graph.node] == ["Add", "If"]
    x = np.array([1.0, 2.0], np.float32)
    for c, want in ((True, x + 1), (False, -(x + 1))):
        got = session(cut).run(None, {"x": x, "cond": np.array(c)})[0]
        assert np.array_equal(got, want)


def test_fetched_yields_every_name_in_order_a_few_per_run(monkeypatch):
    """Layer outputs come a few per run, as many as the fetch budget holds (sized on the run
    before), duplicates included, each equal to a fetch of its own."""
    from onnxprune.search import activations as acts

    model = _two_branch_model()
    rng = np.random.default_rng(3)
    feeds = {"x": rng.standard_normal((6, 8)).astype(np.float32),
             "y": rng.standard_normal((6, 3)).astype(np.float32)}
    names = ["a", "h", "c", "out", "h", "a", "c", "out", "a", "h", "out"]
    runs = []
    real = acts.activations

    def counted(m, part, f):
        runs.append(list(part))
        return real(m, part, f)
    monkeypatch.setattr(acts, "activations", counted)
    monkeypatch.setattr(acts, "FETCH_BYTES", 6 * 3000 * 4 * 2)  # two of h's size
    got = list(acts.fetched(model, names, feeds))
    assert [n for n, _ in got] == names
    assert [len(r) for r in runs] == [8, 2, 1]  # 8 first, then what the budget holds
    for n, a in got:
        assert np.array_equal(a, real(model, [n], feeds)[n])
