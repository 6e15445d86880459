"""Gemm and MatMul rules: linear layers, bias shapes, products of two activations."""

import numpy as np
import pytest
from conftest import group_with_layer, groups_summary

from onnxprune.testing import check_oracle


@pytest.mark.parametrize("trans_b", [True, False])
def test_gemm_chain(gb, trans_b):
    x = gb.input("x", [3, 10])
    h = gb.relu(gb.gemm(x, 10, 16, trans_b=trans_b, name="fc1"))
    h = gb.relu(gb.gemm(h, 16, 12, trans_b=not trans_b, name="fc2"))
    y = gb.gemm(h, 12, 3, name="fc3")
    res = check_oracle(gb.build([y]), trials=4)
    assert groups_summary(res.analysis) == [(3, True), (12, False), (16, False)]


def test_gemm_bias_shapes(gb):
    x = gb.input("x", [2, 6])
    w1 = gb.weight(8, 6)
    h = gb.relu(gb.op("Gemm", [x, w1, gb.const(np.ones((1, 8), np.float32))], transB=1))
    w2 = gb.weight(5, 8)
    h = gb.relu(gb.op("Gemm", [h, w2, gb.const(np.float32(0.5))], transB=1, alpha=0.5, beta=2.0))
    y = gb.gemm(h, 5, 2)
    res = check_oracle(gb.build([y]), trials=4)
    assert groups_summary(res.analysis) == [(2, True), (5, False), (8, False)]


def test_matmul_with_bias_on_3d_input(gb):
    x = gb.input("x", [2, 5, 8])
    h = gb.op("Add", [gb.matmul(x, 8, 16, name="mm1"), gb.const(np.ones(16, np.float32))])
    h = gb.relu(h)
    y = gb.matmul(h, 16, 4, name="mm2")
    res = check_oracle(gb.build([y]), trials=4)
    g = group_with_layer(res.analysis, "mm1")
    assert g.channels == 16 and not g.frozen


def test_matmul_of_two_activations_joins_the_contracted_channels(gb):
    x = gb.input("x", [2, 4, 8])
    q = gb.matmul(x, 8, 8, name="q")
    k = gb.matmul(x, 8, 8, name="k")
    s = gb.op("MatMul", [q, gb.op("Transpose", [k], perm=[0, 2, 1])], name="scores")
    y = gb.matmul(s, 4, 3)
    res = check_oracle(gb.build([y]), trials=4)
    g = group_with_layer(res.analysis, "q")
    assert not g.frozen and {"q", "k"} <= set(g.layers)  # q's column j goes with k's

