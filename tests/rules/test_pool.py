"""Pools and reductions: spatial pools keep channels; sums and means over channels are gated, max freezes."""

import numpy as np
import pytest
from conftest import group_with_layer

from onnxprune.testing import check_oracle
from onnxprune.zoo.builder import GraphBuilder


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("op,keepdims", [("ReduceMean", 1), ("ReduceMean", 0), ("ReduceSum", 1),
                                         ("ReduceL2", 0), ("ReduceSumSquare", 1)])
def test_reductions_over_channels(opset, op, keepdims):
    """Sums over channels are gated like mixing layers; a mean over channels becomes the mean
    over the kept ones (the oracle weights it by the gates)."""
    b = GraphBuilder(opset=opset)
    x = b.input("x", [2, 5, 4])
    h = b.matmul(x, 4, 10, name="mm1")
    if op == "ReduceSum" and opset >= 13 or opset >= 18:
        r = b.op(op, [h, b.const(np.array([-1]))], keepdims=keepdims, name="red")
    else:
        r = b.op(op, [h], axes=[-1], keepdims=keepdims, name="red")
    r = r if keepdims else b.op("Unsqueeze", [r, b.const(np.array([-1]))]) if opset >= 13 \
        else b.op("Unsqueeze", [r], axes=[-1])
    y = b.matmul(b.op("Sub", [h, r]), 10, 3)
    res = check_oracle(b.build([y]), trials=4)
    g = group_with_layer(res.analysis, "mm1")
    assert not g.frozen, g.reason
    kind = {gate.node: gate.kind for gate in res.analysis.gates}["red"]
    assert kind == ("stats" if op == "ReduceMean" else "mul")


def test_reduce_max_over_channels_freezes():
    b = GraphBuilder(opset=17)
    x = b.input("x", [2, 4])
    h = b.matmul(x, 4, 6, name="mm1")
    r = b.op("ReduceMax", [h], axes=[1], keepdims=1)
    res = check_oracle(b.build([b.matmul(b.op("Add", [h, r]), 6, 2)]), trials=1)
    assert group_with_layer(res.analysis, "mm1").frozen


@pytest.mark.parametrize("pool", ["MaxPool", "AveragePool", "LpPool"])
def test_pools(gb, pool):
    x = gb.input("x", [1, 3, 8, 8])
    h = gb.op(pool, [gb.conv(x, 3, 8, name="c1")], kernel_shape=[2, 2], strides=[2, 2])
    h = gb.op("GlobalMaxPool", [h]) if pool == "MaxPool" else gb.op("GlobalAveragePool", [h])
    h = gb.op("Flatten", [h])
    y = gb.gemm(h, 8, 3)
    res = check_oracle(gb.build([y]), trials=3)
    assert not group_with_layer(res.analysis, "c1").frozen


@pytest.mark.parametrize("opset", [13, 18])
def test_reduce_mean_over_spatial_then_linear(opset):
    b = GraphBuilder(opset=opset)
    x = b.input("x", [2, 3, 8, 8])
    h = b.relu(b.conv(x, 3, 8, name="c1"))
    if opset >= 18:
        h = b.op("ReduceMean", [h, b.const(np.array([2, 3], np.int64))], keepdims=0)
    else:
        h = b.op("ReduceMean", [h], axes=[2, 3], keepdims=0)
    y = b.gemm(h, 8, 3)
    res = check_oracle(b.build([y]), trials=3)
    assert not group_with_layer(res.analysis, "c1").frozen


def test_reduce_over_channels(gb):
    """A channel sum feeding the output is gated like a mixing layer (prunable); a channel
    max freezes."""
    x = gb.input("x", [2, 3, 8, 8])
    h = gb.relu(gb.conv(x, 3, 8, name="c1"))
    y = gb.op("ReduceSum", [h, gb.const(np.array([1], np.int64))], keepdims=1, name="rsum")
    m = gb.op("ReduceMax", [gb.relu(gb.conv(x, 3, 8, name="c2"))], axes=[1], name="rmax")
    res = check_oracle(gb.build([y, m]), trials=2)
    assert not group_with_layer(res.analysis, "c1").frozen
    g = group_with_layer(res.analysis, "c2")
    assert g.frozen and "rmax" in g.reason

