"""MAC and parameter counts against hand counts."""

import numpy as np

from onnxprune.analysis.size import graph_macs, graph_params, node_macs
from onnxprune.ir.graph import import_model, infer_shapes
from onnxprune.zoo.builder import GraphBuilder


def _graph(b, outs):
    return infer_shapes(import_model(b.build(outs)))


def _node(graph, name):
    return next(n for n in graph.nodes if n.name == name)


def test_conv_macs_with_stride_and_groups():
    b = GraphBuilder()
    x = b.input("x", [1, 8, 16, 16])
    h = b.conv(x, 8, 16, k=3, stride=2, name="c")  # out 16 x 8 x 8
    y = b.conv(h, 16, 32, k=3, group=4, name="g")  # out 32 x 8 x 8, 4 inputs per group
    g = _graph(b, [y])
    assert node_macs(_node(g, "c")) == 16 * 8 * 8 * 8 * 9
    assert node_macs(_node(g, "g")) == 32 * 8 * 8 * 4 * 9


def test_conv_transpose_gemm_matmul_macs():
    b = GraphBuilder()
    x = b.input("x", [1, 4, 5, 5])
    t = b.conv_transpose(x, 4, 6, k=3, stride=2, name="t")  # each input pixel x 6 x 9
    v = b.input("v", [3, 10])
    f = b.gemm(v, 10, 7, name="fc")
    s = b.input("s", [2, 5, 10])
    m = b.matmul(s, 10, 4, name="mm")
    g = _graph(b, [t, f, m])
    assert node_macs(_node(g, "t")) == 4 * 5 * 5 * 6 * 9
    assert node_macs(_node(g, "fc")) == 3 * 7 * 10
    assert node_macs(_node(g, "mm")) == 2 * 5 * 4 * 10
    assert graph_macs(g) == 4 * 25 * 54 + 210 + 400


def test_params_count_float_constants_once():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 4, 4])
    w = b.weight(5, 3, 3, 3)
    a = b.op("Conv", [x, w], pads=[1] * 4)
    y = b.op("Conv", [x, w], pads=[1] * 4)  # shared: counted once
    z = b.reshape(b.op("Add", [a, y]), [1, -1])  # int64 shape constant: not a parameter
    g = _graph(b, [z])
    assert graph_params(g) == 5 * 3 * 9
    assert isinstance(graph_params(g), int) and np.int64(graph_params(g)) > 0
