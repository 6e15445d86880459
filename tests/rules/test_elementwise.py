"""Elementwise rules: activations, per-channel constants, residual adds, squeeze-excitation, graph-input operands."""

import numpy as np
import pytest
from conftest import group_with_layer, groups_summary

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

