"""The arena a search's sessions share: the same outputs as sessions without one, outputs of
their own, and its memory given back when asked."""

import numpy as np
from onnx import TensorProto, helper

from onnxprune.ir import arena
from onnxprune.ir.memory import current_rss, release
from onnxprune.ir.runtime import session

MB = 1 << 20


def _chain(n=4, reduce=False):
    """Elementwise ops whose intermediates are as large as the input (the arena's work); with
    ``reduce``, a small output (a row's sum) made last."""
    nodes, x = [], "x"
    for i in range(n):
        nodes.append(helper.make_node(["Sigmoid", "Neg", "Abs", "Relu"][i % 4], [x], [f"h{i}"]))
        x = f"h{i}"
    if reduce:
        nodes.append(helper.make_node("ReduceSum", [x, "axes"], ["y"], keepdims=0))
        x = "y"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["n", 1024])], [helper.make_tensor_value_info(
            x, TensorProto.FLOAT, None)],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1])] if reduce else [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_shared_sessions_compute_as_sessions_without_an_arena():
    """Two sessions on the shared arena, at several batch sizes, interleaved: the same bits as
    a session without an arena; their outputs own their memory (a kept output would otherwise
    hold its arena region)."""
    assert arena.available()
    plain = session(_chain(), arena=False)
    shared = [session(_chain(), arena="shared"), session(_chain(3), arena="shared")]
    rng = np.random.default_rng(0)
    for i, n in enumerate([5, 300, 7, 64, 300, 1]):
        x = rng.standard_normal((n, 1024)).astype(np.float32)
        sess = shared[i % 2]
        want = (plain if i % 2 == 0 else session(_chain(3), arena=False)).run(None, {"x": x})[0]
        got = sess.run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, want)
        assert got.flags.owndata


def test_the_arena_is_given_back():
    """A run's 32 MB intermediates stay in the arena after the run (the next run reuses them)
    and go back to the system on ``release``; the small output kept meanwhile does not hold
    the region the arena made it in."""
    sess = session(_chain(reduce=True), arena="shared")
    x = np.ones((8192, 1024), np.float32)  # 32 MB
    release()
    before = current_rss()
    kept = sess.run(None, {"x": x})[0]
    assert current_rss() - before >= 2 * 32 * MB  # intermediates in the arena
    release()
    assert current_rss() - before <= 8 * MB
    want = session(_chain(reduce=True), arena=False).run(None, {"x": x})[0]
    np.testing.assert_array_equal(kept, want)
