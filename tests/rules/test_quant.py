"""Quantized graphs: QuantizeLinear/DequantizeLinear on activations pass channels (a per-tensor
scale shared, per-channel scales and zero points sliced), an int8 weight behind a
DequantizeLinear is claimed with its per-channel scales, QOperator kernels freeze with the
reason. Graphs built in code."""

import numpy as np
from conftest import group_with_layer

from onnxprune.api import prune
from onnxprune.testing import check_oracle
from onnxprune.zoo.builder import GraphBuilder


def _qdq(per_channel_act: bool):
    """conv1 -> Q/DQ (per tensor, or per channel on axis 1) -> relu -> conv2 whose weight is
    int8 with per-output-channel scales."""
    rng = np.random.default_rng(0)
    b = GraphBuilder(seed=0, opset=17)
    h = b.conv(b.input("x", ["N", 3, 8, 8]), 3, 8, name="c1")
    scale = (b.const(np.full(8, 0.05, np.float32)) if per_channel_act
             else b.const(np.float32(0.05)))
    zero = (b.const(np.zeros(8, np.uint8) + 128) if per_channel_act
            else b.const(np.uint8(128)))
    q = b.op("QuantizeLinear", [h, scale, zero], axis=1, name="q")
    h = b.relu(b.op("DequantizeLinear", [q, scale, zero], axis=1, name="dq"))
    w = rng.integers(-100, 100, (4, 8, 3, 3)).astype(np.int8)
    w_scale = b.const(rng.uniform(0.001, 0.01, 4).astype(np.float32))
    weight = b.op("DequantizeLinear", [b.const(w), w_scale, b.const(np.zeros(4, np.int8))],
                  axis=0, name="w_dq")
    y = b.op("Conv", [h, weight], pads=[1, 1, 1, 1], name="c2")
    return b.build([y])


def test_per_tensor_activation_scales_pass_the_channels():
    res = check_oracle(_qdq(False), trials=4)
    g = group_with_layer(res.analysis, "c1")
    assert not g.frozen and {"c1", "c2"} <= set(g.layers)  # through Q/DQ


def test_per_channel_scales_and_zero_points_are_sliced_with_the_channels():
    res = check_oracle(_qdq(True), trials=4)
    g = group_with_layer(res.analysis, "c1")
    assert not g.frozen
    r = prune(_qdq(True), ratio=0.5)
    assert r.verification.passed
    scales = [n for n in r.model.graph.initializer if list(n.dims) == [4]
              and n.data_type == 1]
    assert scales  # the activation's per-channel scales cut to the kept 4 of 8
    weights = [n for n in r.model.graph.initializer if n.data_type == 3]  # int8
    assert any(list(w.dims) == [4, 4, 3, 3] for w in weights)  # c2's input channels cut


def test_a_qoperator_kernel_freezes_with_the_reason():
    b = GraphBuilder(seed=0, opset=17)
    h = b.relu(b.gemm(b.input("x", ["N", 6]), 6, 8, name="fc1"))
    q = b.op("QuantizeLinear", [h, b.const(np.float32(0.05)), b.const(np.uint8(128))])
    w = np.random.default_rng(1).integers(0, 255, (8, 4)).astype(np.uint8)
    y = b.op("MatMulInteger", [q, b.const(w), b.const(np.uint8(128)),
                               b.const(np.uint8(128))], name="mmi")
    res = check_oracle(b.build([b.op("Cast", [y], to=1)]), trials=1)
    g = group_with_layer(res.analysis, "fc1")
    assert g.frozen and "QOperator kernel" in g.reason
