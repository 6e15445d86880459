"""Slice and Pad on and off the channel axis."""

import numpy as np
import pytest
from conftest import group_of_tensor, group_with_layer

from onnxprune.testing import check_oracle
from onnxprune.zoo.builder import GraphBuilder


def _conv(b, x, cin, cout, name):
    return b.relu(b.conv(x, cin, cout, name=name))


@pytest.mark.parametrize("opset", [9, 13])
def test_slice_on_channels(opset):
    b = GraphBuilder(opset=opset)
    x = b.input("x", [1, 3, 8, 8])
    h = _conv(b, x, 3, 12, "c1")
    if opset < 10:
        s = b.op("Slice", [h], starts=[2], ends=[9], axes=[1], name="sl")
    else:
        s = b.op("Slice", [h, b.const(np.array([2])), b.const(np.array([9])),
                           b.const(np.array([1]))], name="sl")
    y = b.conv(s, 7, 2, name="head")
    res = check_oracle(b.build([y, b.conv(h, 12, 3)]), trials=5)
    inside = group_of_tensor(res.analysis, "sl_out0")
    assert inside.channels == 7 and not inside.frozen
    outside = [g for g in res.analysis.groups if "c1" in g.layers and g is not inside]
    assert [g.channels for g in outside] == [5]  # channels 0-1 and 9-11 share one signature


def test_strided_slice_on_channels_freezes(gb):
    x = gb.input("x", [1, 3, 8, 8])
    h = _conv(gb, x, 3, 12, "c1")
    s = gb.op("Slice", [h, gb.const(np.array([0])), gb.const(np.array([12])),
                        gb.const(np.array([1])), gb.const(np.array([2]))], name="sl")
    y = gb.conv(s, 6, 2, name="head")
    res = check_oracle(gb.build([y]), trials=1)
    assert group_with_layer(res.analysis, "c1").frozen


def test_pad_spatial_ok_channel_frozen(gb):
    x = gb.input("x", [1, 3, 6, 6])
    h = _conv(gb, x, 3, 8, "c1")
    h = gb.op("Pad", [h, gb.const(np.array([0, 0, 1, 1, 0, 0, 1, 1]))], mode="reflect")
    h2 = _conv(gb, h, 8, 6, "c2")
    h2 = gb.op("Pad", [h2, gb.const(np.array([0, 1, 0, 0, 0, 1, 0, 0]))], name="padc")
    y = gb.conv(h2, 8, 2)
    res = check_oracle(gb.build([y]), trials=3)
    assert not group_with_layer(res.analysis, "c1").frozen
    g = group_of_tensor(res.analysis, "c2_out0")
    assert g.frozen and "padc" in g.reason



def test_slice_with_run_time_bounds_off_the_channel_axis():
    """A sequence sliced to a length computed at run time (BERT's position-ids buffer, any
    `x[:, :n]`): the channels on the other axes pass through, prune and verify."""
    b = GraphBuilder(opset=17)
    x = b.input("x", ["batch", "seq", 16])
    h = b.relu(b.op("MatMul", [x, b.weight(16, 24, hint="w1")], name="fc1"))
    n = b.op("Slice", [b.op("Shape", [x]), b.const(np.array([1])), b.const(np.array([2]))])
    h = b.op("Slice", [h, b.const(np.array([0])), n, b.const(np.array([1]))], name="sl")
    y = b.op("MatMul", [h, b.weight(24, 5, hint="w2")], name="fc2")
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 7, 16)).astype(np.float32)}
    res = check_oracle(b.build([y]), trials=5, feeds=feeds)
    g = group_with_layer(res.analysis, "fc1")
    assert g.channels == 24 and not g.frozen


def test_slice_with_run_time_bounds_on_the_channel_axis_freezes():
    b = GraphBuilder(opset=17)
    x = b.input("x", ["batch", 16])
    k = b.input("k", ["batch", "n"])  # how many channels to keep, known at run time only
    h = b.relu(b.gemm(x, 16, 24, name="fc1"))
    n = b.op("Slice", [b.op("Shape", [k]), b.const(np.array([1])), b.const(np.array([2]))])
    h = b.op("Slice", [h, b.const(np.array([0])), n, b.const(np.array([1]))], name="sl")
    y = b.op("ReduceSum", [h, b.const(np.array([1]))], keepdims=1)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 16)).astype(np.float32),
             "k": rng.standard_normal((2, 20)).astype(np.float32)}
    res = check_oracle(b.build([y]), trials=1, feeds=feeds)
    g = group_with_layer(res.analysis, "fc1")
    assert g.frozen and "computed at run time" in g.reason
