"""Hand-built graphs: a MatMul/Split/Concat network and the demo CNN."""

import numpy as np
from conftest import group_of_tensor, groups_summary

from onnxprune.testing import check_oracle
from onnxprune.zoo.builder import GraphBuilder, demo_cnn


def matmul_split_concat():
    b = GraphBuilder(seed=5)
    x = b.input("x", ["batch", 16])
    h = b.relu(b.op("Add", [b.matmul(x, 16, 24, name="mm1"),
                            b.const(np.linspace(-1, 1, 24).astype(np.float32))], name="bias1"))
    s0, s1 = b.op("Split", [h, b.const(np.array([8, 16], np.int64))], n_out=2, axis=1,
                  name="split")
    a = b.relu(b.matmul(s0, 8, 10, name="mm_a"))
    c = b.relu(b.matmul(s1, 16, 6, name="mm_b"))
    cat = b.op("Concat", [a, c], axis=1, name="cat")
    h = b.relu(b.op("Add", [cat, b.matmul(x, 16, 16, name="mm_r")], name="residual"))
    y = b.matmul(h, 16, 4, name="mm_out")
    return b.build([y], "matmul_split_concat")


def test_matmul_split_concat_groups():
    res = check_oracle(matmul_split_concat(), trials=6)
    a = res.analysis
    assert groups_summary(a) == [(4, True), (6, False), (8, False), (10, False), (16, False)]
    assert set(group_of_tensor(a, "split_out0").layers) == {"mm1", "bias1", "mm_a"}
    assert set(group_of_tensor(a, "split_out1").layers) == {"mm1", "bias1", "mm_b"}
    # the residual joins each concat part with its slice of mm_r's outputs
    left = group_of_tensor(a, "mm_a_out0")
    assert set(left.layers) == {"mm_a", "mm_r", "mm_out"} and left.channels == 10
    right = group_of_tensor(a, "mm_b_out0")
    assert set(right.layers) == {"mm_b", "mm_r", "mm_out"} and right.channels == 6


def test_demo_cnn_groups():
    res = check_oracle(demo_cnn(), trials=6)
    a = res.analysis
    assert groups_summary(a) == [(10, True), (24, False), (32, False), (32, False), (40, False),
                                 (64, False), (128, False)]
    stem = next(g for g in a.groups if "stem" in g.layers)
    # the residual stream: stem, both block convs, the depthwise branch and the 1x1 branch
    assert {"stem", "block1_conv1", "block1_conv2", "branch_a", "branch_b_dw",
            "branch_b_pw"} == set(stem.layers)
    assert res.max_abs_diff < 1e-4
