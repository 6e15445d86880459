"""Failures found by the property-based fuzzer (tests/test_fuzz.py), each reduced by hand to a
minimal graph and kept as a normal test of the correct behaviour.

A real bug in onnxprune that is not fixed yet gets ``xfail(strict=True, reason=<the bug>)`` and
an entry in ``KNOWN_BUGS`` (test_fuzz.py); once fixed, the strict xfail turns the pass into a
failure and both go. The three bugs below were found that way and fixed in f902458; the
tests stay as plain regression tests.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.analysis.channels import analyze_channels
from onnxprune.api import prune
from onnxprune.ir.graph import export_model, import_model
from onnxprune.ir.runtime import random_feeds, session
from onnxprune.rewrite.remove import remove_units
from onnxprune.testing import check_oracle, normalized
from onnxprune.verify.compare import close, max_diffs
from onnxprune.verify.oracle import Oracle
from onnxprune.zoo.builder import GraphBuilder


def check_removal(model: onnx.ModelProto, choose, require: bool = True) -> tuple[float, object]:
    """Remove ``choose(free_units)`` of every prunable group (deterministic), rewrite, check
    and compare with the mask oracle. Returns (max abs diff, analysis). ``require``: fail if
    nothing is removed (a repro that lost its point)."""
    reference = normalized(model)
    analysis = analyze_channels(import_model(reference))
    removed = np.zeros(analysis.num_units, dtype=bool)
    for g in analysis.groups:
        free = g.units[~analysis.unit_frozen[g.units]]
        if not g.frozen and free.size:
            drop = np.asarray(choose(free))
            if drop.size == g.channels:
                drop = drop[1:]  # a group never loses every channel
            removed[drop] = True
    removed = analysis.enforce_links(removed)
    if not removed.any():
        assert not require, "nothing to remove: the repro lost its point"
        return 0.0, analysis
    graph = import_model(reference)
    remove_units(graph, analysis, removed)
    pruned = export_model(graph)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = random_feeds(reference, seed=0)
    got = session(pruned).run(None, feeds)
    want = Oracle(reference, analysis).run(feeds, ~removed)
    assert close(got, want), f"pruned model differs from the oracle ({max_diffs(got, want)[0]})"
    return max_diffs(got, want)[0], analysis


def keep_one_per_group(model: onnx.ModelProto, require: bool = True):
    """The narrowest legal model: every prunable group keeps one channel."""
    return check_removal(model, lambda free: free[1:] if free.size > 1 else free, require)


def remove_one_per_group(model: onnx.ModelProto):
    return check_removal(model, lambda free: free[:1])


def maps_match_shapes(analysis, model: onnx.ModelProto) -> None:
    """Every parameter claim has one unit per slice of the axis it slices."""
    tensors = import_model(model).tensors()
    for (name, axis), units in analysis.params.items():
        size = tensors[name].values.shape[axis]
        assert units.size == size, f"{name} axis {axis}: {units.size} units for {size} slices"


# -- a model without any channel to track -----------------------------------------------------
def model_without_channels() -> onnx.ModelProto:
    b = GraphBuilder(opset=17)
    x = b.input("x", ["batch", 3, 4, 4])
    y = b.op("ReduceMean", [b.relu(x)], axes=[2], keepdims=1)
    return b.build([y])


def test_model_without_channels_checks_trivially():
    """Was: Oracle.run reshaped the gates with reshape(-1, num_units), a ValueError when the
    model has no channel units at all (num_units == 0)."""
    res = check_oracle(model_without_channels(), trials=1)
    assert res.analysis.num_units == 0


def test_model_without_channels_prunes_to_itself():
    r = prune(model_without_channels(), ratio=0.5)
    assert r.verification.passed and r.params_after == r.params_before


# -- an operand with one channel broadcast up to many -----------------------------------------
def one_channel_broadcast_up(other: str) -> onnx.ModelProto:
    """(N, 1, H, W) from a conv minus a 4-channel operand: the output has 4 channels."""
    b = GraphBuilder(opset=17)
    x = b.input("x", [1, 4, 4, 4])
    one = b.conv(x, 4, 1, name="one")
    wide = x if other == "input" else b.const(np.ones((1, 4, 1, 1), np.float32))
    h = b.op("Sub", [one, wide], name="bcast")
    y = b.conv(h, 4, 2, name="head")
    return b.build([y])


@pytest.mark.parametrize("other", ["input", "const"])
def test_broadcast_up_from_one_channel_is_frozen(other):
    res = check_oracle(one_channel_broadcast_up(other), trials=1)
    g = next(g for g in res.analysis.groups if "one" in g.layers)
    assert g.frozen and "bcast" in g.reason


@pytest.mark.parametrize("other", ["input", "const"])
def test_broadcast_up_from_one_channel_claims_match(other):
    """Was: join_broadcast (rules/elementwise.py) gave the 4-channel output the 1-atom map of
    its 1-channel operand; the head's weight claim then had 1 unit for 4 slices and scoring
    (magnitude.reduce_members) raised IndexError."""
    reference = normalized(one_channel_broadcast_up(other))
    maps_match_shapes(analyze_channels(import_model(reference)), reference)


@pytest.mark.parametrize("other", ["input", "const"])
def test_broadcast_up_from_one_channel_prune_api(other):
    r = prune(one_channel_broadcast_up(other), ratio=0.5)
    assert r.verification.passed and r.params_after == r.params_before  # nothing prunable


# -- Squeeze without axes ------------------------------------------------------------------------
def squeeze_all_ones() -> onnx.ModelProto:
    """GlobalAveragePool -> Squeeze with no axes (every 1 goes) -> Gemm."""
    b = GraphBuilder(opset=13)
    x = b.input("x", [2, 3, 4, 4])
    h = b.relu(b.conv(x, 3, 4, name="c1"))
    h = b.op("Squeeze", [b.op("GlobalAveragePool", [h])], name="squeeze")
    y = b.gemm(h, 4, 2, name="fc")
    return b.build([y])


def test_squeeze_without_axes_keeps_channels_prunable():
    _, analysis = remove_one_per_group(squeeze_all_ones())
    g = next(g for g in analysis.groups if "c1" in g.layers)
    assert not g.frozen and g.channels == 4


def test_squeeze_without_axes_pruned_to_one_channel():
    """Was: Squeeze with no axes drops every size-1 axis, so a group pruned to 1 channel lost
    its channel axis too (Squeeze had no rewrite or explicit axes; rules/reshape.py)."""
    keep_one_per_group(squeeze_all_ones())


def test_squeeze_without_axes_prune_api_to_one_channel():
    r = prune(squeeze_all_ones(), ratio=0.75)  # 4 channels -> 1
    assert r.verification.passed
    shapes = [list(i.dims) for i in r.model.graph.initializer]
    assert [1, 3, 3, 3] in shapes and [2, 1] in shapes  # c1 keeps 1 channel, fc 1 input


def test_sum_over_two_channel_axes_chains_two_gates():
    """Was: a reduction over two tracked axes puts two gates on one input; the oracle looked up
    the rank of the first gate's output, which shape inference never saw (oracle.py)."""
    b = GraphBuilder(opset=12)
    x = b.input("x", ["n", 3, 4, 4])
    h = b.conv(x, 3, 6, 1, name="c1")  # channels on axis 1
    h = b.op("MatMul", [h, b.const(np.random.default_rng(0).normal(size=(4, 5))
                                   .astype(np.float32))], name="mm")  # and on axis 3
    y = b.op("ReduceSum", [h], axes=[1, 3], keepdims=0, name="rsum")
    res = check_oracle(b.build([y]), trials=3)
    assert sum(g.kind == "mul" and g.node == "rsum" for g in res.analysis.gates) == 2


def test_global_average_pool_over_a_reshaped_channel_axis_at_opset_12():
    """A channel axis split by a Reshape and pooled by GlobalAveragePool (a gated mean): before
    opset 13 ReduceSum takes its axes as an attribute only, and the gate's sums reduced every
    axis (batch and channels too: [2, 2, 1, 1] read [1, 1, 1, 1] with all gates open). The
    gated mean is now a ratio of two GlobalAveragePools."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((4, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(np.array([0, 8, 4], np.int64), "s1"),
             numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array([0, 2, 4, 1], np.int64), "s2")]
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w"], ["m"]),
             helper.make_node("Reshape", ["m", "s2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["y"])]
    graph = helper.make_graph(
        nodes, "gap12", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 2, 1, 1]),
         helper.make_tensor_value_info("r2", TensorProto.FLOAT, ["b", 2, 4, 1])], inits)
    for opset in (12, 13):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        check_oracle(model, seed=0)


def test_a_block_inside_a_removed_parallel_block_goes_with_it():
    """A stream s, a residual branch joined by one Add and a second branch by the next: the
    parallel block (both branches) contains the first block. Removing both used to bypass the
    inner Add first and then read its inputs, gone (found by the depth fuzzer)."""
    from onnxprune.analysis.blocks import find_blocks
    from onnxprune.rewrite.blocks import remove_blocks

    b = GraphBuilder(seed=0)
    x = b.input("x", ["N", 2, 6, 6])
    s = b.conv(x, 2, 3, name="stem")
    inner = b.op("Add", [b.conv(b.relu(b.conv(s, 3, 3, name="c1")), 3, 3, name="c2"), s],
                 name="join1")
    outer = b.op("Add", [b.op("Softmax", [s], axis=1), inner], name="join2")
    model = b.build([b.conv(outer, 3, 2, name="head")])
    graph = import_model(normalized(model))
    blocks = {blk.name: blk for blk in find_blocks(graph) if blk.removable}
    assert {"join1", "join2"} <= set(blocks) and "join1" in blocks["join2"].nodes
    remove_blocks(graph, [blocks["join1"], blocks["join2"]])
    assert not any(n.op == "Add" for n in graph.nodes)
    # the reference: the head reads the stem's output directly (rewired by hand)
    ref = import_model(normalized(model))
    by = {n.name: n for n in ref.nodes}
    stem_out = by["join1"].inputs[1]
    head = next(n for n in ref.nodes if n.op == "Conv" and n.inputs[0] is by["join2"].outputs[0])
    head.inputs[0] = stem_out
    ref.cleanup().toposort()
    kept, want = export_model(graph), export_model(ref)
    feeds = random_feeds(want, seed=0)
    got, expected = session(kept).run(None, feeds)[0], session(want).run(None, feeds)[0]
    np.testing.assert_array_equal(got, expected)
