"""Resize/Upsample leave channels intact (U-Net skips too)."""

import numpy as np
import onnx
import pytest
from conftest import group_of_tensor, group_with_layer

from onnxprune.api import prune
from onnxprune.testing import check_oracle
from onnxprune.zoo.builder import GraphBuilder


def _conv(b, x, cin, cout, name):
    return b.relu(b.conv(x, cin, cout, name=name))


@pytest.mark.parametrize("mode", ["scales", "sizes", "upsample"])
def test_resize_keeps_channels(mode):
    b = GraphBuilder(opset=9 if mode == "upsample" else 13)
    x = b.input("x", [1, 3, 4, 4])
    h = _conv(b, x, 3, 8, "c1")
    if mode == "upsample":
        h = b.op("Upsample", [h, b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    elif mode == "scales":
        h = b.op("Resize", [h, "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    else:
        h = b.op("Resize", [h, "", "", b.const(np.array([1, 8, 8, 8], np.int64))],
                 mode="linear", name="rs")
    y = b.conv(h, 8, 2, name="c2")
    model = b.build([y])
    res = check_oracle(model, trials=4)
    assert not group_with_layer(res.analysis, "c1").frozen
    if mode == "sizes":
        r = prune(model, ratio=0.5)
        sizes = next(onnx.numpy_helper.to_array(i) for i in r.model.graph.initializer
                     if i.name.startswith("rs_in3"))
        assert sizes.tolist() == [1, 4, 8, 8]


def test_unet_style_skip_with_resize(gb):
    x = gb.input("x", [1, 3, 8, 8])
    e1 = _conv(gb, x, 3, 8, "enc1")
    e2 = _conv(gb, gb.op("MaxPool", [e1], kernel_shape=[2, 2], strides=[2, 2]), 8, 16, "enc2")
    up = gb.op("Resize", [e2, "", gb.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    h = gb.op("Concat", [up, e1], axis=1, name="skip")
    y = gb.conv(_conv(gb, h, 24, 8, "dec"), 8, 2, name="out")
    res = check_oracle(gb.build([y]), trials=5)
    assert set(group_with_layer(res.analysis, "enc1").layers) == {"enc1", "enc2", "dec"}
    assert set(group_of_tensor(res.analysis, "enc2_out0").layers) == {"enc2", "dec"}

