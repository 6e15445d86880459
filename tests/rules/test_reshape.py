"""Flatten, Reshape, Transpose, Squeeze/Unsqueeze: channels spread into features and back."""

import numpy as np
import onnx
import pytest
from conftest import group_with_layer

from onnxprune.api import prune
from onnxprune.testing import check_oracle
from onnxprune.zoo.builder import GraphBuilder


def _conv(b, x, cin, cout, name):
    return b.relu(b.conv(x, cin, cout, name=name))


@pytest.mark.parametrize("how", ["flatten", "reshape", "reshape_minus1"])
def test_flatten_spreads_channels_into_features(gb, how):
    x = gb.input("x", [2, 3, 8, 8])
    h = gb.op("MaxPool", [_conv(gb, x, 3, 6, "c1")], kernel_shape=[2, 2], strides=[2, 2])
    if how == "flatten":
        h = gb.op("Flatten", [h])
    else:
        h = gb.reshape(h, [2, 96] if how == "reshape" else [0, -1])
    y = gb.gemm(h, 96, 3, name="fc")
    res = check_oracle(gb.build([y]), trials=4)
    g = group_with_layer(res.analysis, "c1")
    assert g.channels == 6 and "fc" in g.layers
    fc_in = next(p for p in g.params if p.size == 96)
    assert fc_in.count == 96


def test_unflatten_joins_linear_features_into_channels(gb):
    z = gb.input("z", ["batch", 8])
    h = gb.relu(gb.gemm(z, 8, 16 * 9, name="fc"))
    h = gb.reshape(h, [-1, 16, 3, 3])
    h = gb.relu(gb.conv_transpose(h, 16, 4, name="up"))
    y = gb.conv(h, 4, 1, name="out")
    model = gb.build([y])
    res = check_oracle(model, trials=4)
    g = group_with_layer(res.analysis, "fc")
    assert g.channels == 16 and set(g.layers) == {"fc", "up"}
    r = prune(model, ratio=0.5)
    shapes = {i.name: list(onnx.numpy_helper.to_array(i).shape) for i in r.model.graph.initializer}
    assert [72, 8] in shapes.values()  # fc: 8 of 16 channels x 9 features each
    assert [8, 2, 3, 3] in shapes.values()  # ConvTranspose: half its inputs and outputs
    assert r.verification.passed


def test_channel_last_transpose_then_matmul(gb):
    x = gb.input("x", [2, 3, 4, 4])
    h = _conv(gb, x, 3, 8, "c1")
    h = gb.op("Transpose", [h], perm=[0, 2, 3, 1])
    h = gb.relu(gb.matmul(h, 8, 6, name="mm"))
    h = gb.op("Transpose", [h], perm=[0, 3, 1, 2])
    y = gb.conv(h, 6, 2, name="c2")
    res = check_oracle(gb.build([y]), trials=4)
    assert set(group_with_layer(res.analysis, "c1").layers) == {"c1", "mm"}
    assert set(group_with_layer(res.analysis, "c2").layers) == {"mm", "c2"}


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze(opset):
    b = GraphBuilder(opset=opset)
    x = b.input("x", [2, 3, 4, 4])
    h = b.op("GlobalAveragePool", [_conv(b, x, 3, 8, "c1")])
    if opset < 13:
        h = b.op("Squeeze", [h], axes=[2, 3])
    else:
        h = b.op("Squeeze", [h, b.const(np.array([2, 3]))])
    h = b.relu(b.gemm(h, 8, 6, name="fc"))
    if opset < 13:
        h = b.op("Unsqueeze", [h], axes=[2, 3])
    else:
        h = b.op("Unsqueeze", [h, b.const(np.array([2, 3]))])
    y = b.conv(h, 6, 2, k=1, name="c2")
    res = check_oracle(b.build([y]), trials=4)
    assert set(group_with_layer(res.analysis, "c1").layers) == {"c1", "fc"}
    assert set(group_with_layer(res.analysis, "c2").layers) == {"fc", "c2"}

