"""Op rules for elementwise and per-channel ops: activations, broadcasting, pools, reductions."""

import numpy as np
import pytest
from conftest import group_of_tensor, group_with_layer, groups_summary

from onnxprune.testing import check_oracle
from onnxprune.zoo.builder import GraphBuilder

ACTIVATIONS = [
    ("Relu", {}, 17), ("LeakyRelu", {"alpha": 0.1}, 17), ("Elu", {}, 17), ("Selu", {}, 17),
    ("Celu", {}, 17), ("Sigmoid", {}, 17), ("HardSigmoid", {}, 17), ("HardSwish", {}, 17),
    ("Tanh", {}, 17), ("Softplus", {}, 17), ("Softsign", {}, 17), ("Erf", {}, 17),
    ("Gelu", {}, 20), ("Mish", {}, 18), ("ThresholdedRelu", {}, 17), ("Abs", {}, 17),
    ("Neg", {}, 17), ("Exp", {}, 17), ("Sin", {}, 17), ("Identity", {}, 17),
    ("Dropout", {}, 17), ("Shrink", {"lambd": 0.1}, 17),
]


@pytest.mark.parametrize("op,attrs,opset", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_unary_activation_passes_channels(op, attrs, opset):
    b = GraphBuilder(opset=opset)
    x = b.input("x", [2, 3, 6, 6])
    h = b.op(op, [b.conv(x, 3, 8, name="c1")], **attrs)
    y = b.conv(h, 8, 2, name="c2")
    res = check_oracle(b.build([y]), trials=3)
    g = group_with_layer(res.analysis, "c1")
    assert g.channels == 8 and not g.frozen and "c2" in g.layers


def test_clip_with_bounds(gb):
    x = gb.input("x", [2, 3, 6, 6])
    h = gb.op("Clip", [gb.conv(x, 3, 8, name="c1"), gb.const(np.float32(0)),
                       gb.const(np.float32(6))])
    y = gb.conv(h, 8, 2)
    res = check_oracle(gb.build([y]), trials=3)
    assert not group_with_layer(res.analysis, "c1").frozen


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min"])
def test_per_channel_constants_are_sliced(gb, op):
    x = gb.input("x", [2, 3, 6, 6])
    h = gb.conv(x, 3, 8, name="c1")
    per_channel = gb.const(np.linspace(0.5, 2.0, 8, dtype=np.float32).reshape(1, 8, 1, 1))
    h = gb.op(op, [h, per_channel], name="op")
    h = gb.op("Mul", [h, gb.const(np.float32(0.5))])  # a scalar broadcasts
    h = gb.op("Add", [gb.const(np.ones((8, 1, 1), np.float32)), h])  # lower rank, left side
    y = gb.conv(h, 8, 2)
    res = check_oracle(gb.build([y]), trials=3)
    g = group_with_layer(res.analysis, "op")
    assert g.channels == 8 and not g.frozen
    assert sum(1 for p in g.params if p.size == 8 and p.param.startswith("c_")) == 2


def test_residual_add_couples_both_branches(gb):
    x = gb.input("x", [1, 3, 8, 8])
    h = gb.relu(gb.conv(x, 3, 8, name="stem"))
    r = gb.relu(gb.conv(h, 8, 16, name="r1"))
    r = gb.conv(r, 16, 8, name="r2")
    h = gb.relu(gb.op("Add", [h, r], name="add"))
    y = gb.conv(h, 8, 2, name="head")
    res = check_oracle(gb.build([y]), trials=4)
    g = group_with_layer(res.analysis, "stem")
    assert set(g.layers) == {"stem", "r1", "r2", "head"}
    assert groups_summary(res.analysis) == [(2, True), (8, False), (16, False)]


def test_squeeze_excitation_couples_gate_with_features(gb):
    x = gb.input("x", [1, 3, 8, 8])
    h = gb.relu(gb.conv(x, 3, 16, name="feat"))
    s = gb.op("GlobalAveragePool", [h])
    s = gb.relu(gb.conv(s, 16, 4, k=1, name="se_reduce"))
    s = gb.op("Sigmoid", [gb.conv(s, 4, 16, k=1, name="se_expand")])
    h = gb.op("Mul", [h, s], name="scale")
    y = gb.conv(h, 16, 2, name="head")
    res = check_oracle(gb.build([y]), trials=4)
    g = group_with_layer(res.analysis, "feat")
    assert {"feat", "se_reduce", "se_expand", "head"} <= set(g.layers)
    assert group_with_layer(res.analysis, "se_reduce").channels in (4, 16)


def test_graph_input_operand_freezes(gb):
    x = gb.input("x", [1, 3, 8, 8])
    bias = gb.input("bias", [1, 8, 8, 8])
    h = gb.op("Add", [gb.conv(x, 3, 8, name="c1"), bias], name="add_input")
    y = gb.conv(h, 8, 2)
    res = check_oracle(gb.build([y]), trials=1)
    g = group_with_layer(res.analysis, "c1")
    assert g.frozen and "add_input" in g.reason


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


def test_softmax_axis():
    b = GraphBuilder(opset=17)
    x = b.input("x", [2, 3, 4, 4])
    h = b.conv(x, 3, 8, name="c1")
    h = b.op("Softmax", [h], axis=3, name="sm_spatial")
    h = b.conv(h, 8, 6, name="c2")
    y = b.op("Softmax", [h], axis=1, name="sm_channel")
    res = check_oracle(b.build([y, b.conv(h, 6, 2)]), trials=2)
    assert not group_with_layer(res.analysis, "c1").frozen
    g = group_of_tensor(res.analysis, "c2_out0")
    assert g.frozen and "sm_channel" in g.reason


def test_unknown_op_freezes_with_reason(gb):
    x = gb.input("x", [1, 3, 8, 8])
    h = gb.conv(x, 3, 8, name="c1")
    h = gb.op("LRN", [h], size=3, name="lrn")  # normalizes across channels
    y = gb.conv(h, 8, 2)
    res = check_oracle(gb.build([y]), trials=1)
    g = group_with_layer(res.analysis, "c1")
    assert g.frozen and g.reason == "LRN lrn: no channel rule for op LRN"


def test_graph_output_freezes(gb):
    x = gb.input("x", [1, 3, 8, 8])
    h = gb.relu(gb.conv(x, 3, 8, name="c1"))
    y = gb.conv(h, 8, 2, name="c2")
    res = check_oracle(gb.build([y, h]), trials=1)
    g = group_with_layer(res.analysis, "c1")
    assert g.frozen and g.reason.startswith("reaches graph output")


def test_shared_weight_couples_its_users(gb):
    x = gb.input("x", [1, 4, 8, 8])
    w = gb.weight(4, 4, 3, 3)
    a = gb.op("Conv", [x, w], pads=[1] * 4, name="shared_a")
    b2 = gb.op("Conv", [gb.relu(a), w], pads=[1] * 4, name="shared_b")
    y = gb.conv(gb.relu(b2), 4, 2, name="head")
    res = check_oracle(gb.build([y]), trials=3)
    g = group_with_layer(res.analysis, "shared_a")
    # a's outputs are b's inputs and both use the same weight: rows == columns -> one group
    assert "shared_b" in g.layers
    assert g.frozen  # the input x's channels (graph input) share the weight's columns


def test_exclude_glob_leaves_node_untouched(gb):
    x = gb.input("x", [1, 3, 8, 8])
    h = gb.relu(gb.conv(x, 3, 8, name="keep_me"))
    h = gb.relu(gb.conv(h, 8, 8, name="c2"))
    y = gb.conv(h, 8, 2, name="c3")
    res = check_oracle(gb.build([y]), trials=2, exclude=["keep*"])
    g = group_with_layer(res.analysis, "keep_me")
    assert g.frozen and "excluded" in g.reason
    assert not next(g for g in res.analysis.groups if "c2" in g.layers and "c3" in g.layers).frozen
