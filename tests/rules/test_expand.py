"""Expand: targets follow the kept channels."""

import numpy as np
from conftest import group_of_tensor, group_with_layer

from onnxprune.testing import check_oracle
from onnxprune.zoo.builder import GraphBuilder


def test_expand_follows_the_kept_channels():
    """A pooled feature map broadcast back by Expand (a constant target naming the channel
    count) and a constant expanded to a computed batch size, concatenated on the channels:
    both targets follow the removal."""
    b = GraphBuilder(opset=17)
    x = b.input("x", ["n", 3, 6, 6])
    h = b.conv(x, 3, 8, 3, name="c1")
    pooled = b.op("GlobalAveragePool", [h])
    back = b.op("Expand", [pooled, b.const(np.array([1, 8, 6, 6]))], name="expand_back")
    s = b.op("Add", [h, back])
    bias = b.const(np.random.default_rng(0).normal(size=(1, 4, 1, 1)).astype(np.float32))
    tgt = b.op("Concat", [b.op("Slice", [b.op("Shape", [s]), b.const(np.array([0])),
                                        b.const(np.array([1]))]),
                          b.const(np.array([1, 6, 6]))], axis=0)
    extra = b.op("Expand", [bias, tgt], name="expand_const")
    y = b.conv(b.op("Concat", [s, extra], axis=1), 12, 2, 1, name="c2")
    res = check_oracle(b.build([y]), trials=4)
    g = group_with_layer(res.analysis, "c1")
    assert not g.frozen and "expand_back" in str(g.members)
    const = group_of_tensor(res.analysis, "expand_const_out0")
    assert not const.frozen and "expand_const" in const.layers

