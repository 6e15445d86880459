"""The layer view (``rules/layers.py``): a weighted op's rule says how its weight reads as a
[inputs x kernel, outputs] matrix and back, and which rows its input gives; the product of
those rows and that matrix (plus the bias) is the layer's own output as onnxruntime computes
it, and the matrix goes back to the very weight."""

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import numpy_helper

from onnxprune.ir.graph import import_model
from onnxprune.ir.runtime import session
from onnxprune.rules import layer_of
from onnxprune.zoo.builder import GraphBuilder

RNG = np.random.default_rng(0)


def _w(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


CASES = {
    "conv": (["batch", 3, 9, 9], lambda b, x: b.op(
        "Conv", [x, b.const(_w(5, 3, 3, 2)), b.const(_w(5))], strides=[2, 1], pads=[1, 0, 1, 1],
        dilations=[1, 2])),
    "conv-transpose": (["batch", 3, 5, 5], lambda b, x: b.op(
        "ConvTranspose", [x, b.const(_w(3, 4, 3, 3)), b.const(_w(4))], strides=[2, 2])),
    "gemm": (["batch", 6], lambda b, x: b.op(
        "Gemm", [x, b.const(_w(7, 6)), b.const(_w(7))], transB=1, alpha=0.5, beta=2.0)),
    "matmul": (["batch", 4, 6], lambda b, x: b.op("MatMul", [x, b.const(_w(6, 7))])),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rows_times_the_matrix_is_the_layer(case):
    shape, build = CASES[case]
    b = GraphBuilder(seed=0)
    x = b.input("x", shape)
    model = b.build([build(b, x)])
    node = next(n for n in import_model(model).nodes if n.op in (
        "Conv", "ConvTranspose", "Gemm", "MatMul"))
    view = layer_of(node)
    assert view is not None and view.op == node.op
    xs = RNG.standard_normal([2] + shape[1:]).astype(np.float32)
    y = session(model).run(None, {"x": xs})[0]
    mat, bias = view.matrix()
    pred = view.rows(xs).astype(np.float64) @ mat + (0.0 if bias is None else bias)
    # float32 layers against a float64 product of the same numbers: rounding only
    np.testing.assert_allclose(pred, view.out_rows(y), rtol=1e-4, atol=1e-4)
    assert np.array_equal(view.weight(mat), np.asarray(node.inputs[1].values))
    assert view.weight(mat).dtype == np.float32
    assert view.data_axis(len(shape)) == (len(shape) - 1 if case == "matmul" else 1)
    out = view.weight_out_axis()
    assert np.shape(node.inputs[1].values)[out] == mat.shape[1]


def test_what_is_not_a_matrix_product_has_no_view():
    b = GraphBuilder(seed=0)
    x = b.input("x", ["batch", 4, 6, 6])
    grouped = b.op("Conv", [x, b.const(_w(4, 2, 3, 3))], group=2)
    q = b.input("q", ["batch", 3, 5])
    product = b.op("MatMul", [q, b.op("Transpose", [q], perm=[0, 2, 1])])
    graph = import_model(b.build([grouped, product]))
    views = {n.op: layer_of(n) for n in graph.nodes}
    assert views["Conv"] is None and views["MatMul"] is None
    relu = gs.Node("Relu", inputs=[graph.inputs[0]], outputs=[gs.Variable("r")])
    assert layer_of(relu) is None


SCALED = {
    "grouped conv": (["batch", 4, 6, 6], lambda b, x: b.op("Conv", [x, b.const(_w(6, 2, 3, 3))],
                                                        group=2), 1),
    "grouped conv-transpose": (["batch", 4, 5, 5], lambda b, x: b.op(
        "ConvTranspose", [x, b.const(_w(4, 3, 3, 3))], group=2, strides=[2, 2]), 1),
    "gemm transB": (["batch", 6], lambda b, x: b.op("Gemm", [x, b.const(_w(7, 6))], transB=1),
                    1),
    "gemm": (["batch", 6], lambda b, x: b.op("Gemm", [x, b.const(_w(6, 7))]), 1),
}


@pytest.mark.parametrize("case", sorted(SCALED))
def test_scaled_outputs_scale_each_output_channel(case):
    """What folding a BatchNorm takes: the rule scales each output channel's weights, any
    groups; the layer's output channel c is then scale[c] times what it was."""
    from onnxprune.rules import rule_of

    shape, build, axis = SCALED[case]
    b = GraphBuilder(seed=0)
    x = b.input("x", shape)
    model = b.build([build(b, x)])
    node = next(n for n in import_model(model).nodes if n.op in ("Conv", "ConvTranspose",
                                                                 "Gemm"))
    xs = RNG.standard_normal([2] + shape[1:]).astype(np.float32)
    y = session(model).run(None, {"x": xs})[0]
    scale = RNG.uniform(0.5, 2.0, y.shape[axis])
    w = rule_of(node).scale_outputs(node, scale)
    for init in model.graph.initializer:
        if init.name == node.inputs[1].name:
            init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), init.name))
    scaled = session(model).run(None, {"x": xs})[0]
    expected = y * scale.reshape((-1,) + (1,) * (y.ndim - 2))
    np.testing.assert_allclose(scaled, expected, rtol=1e-4, atol=1e-5)


CONV_ATTRS = {
    "1-d, asymmetric pads, stride, dilation": ((2, 3, 17), (4, 3, 5),
                                               {"pads": [3, 1], "strides": [2], "dilations": [2]}),
    "2-d defaults": ((2, 3, 7, 6), (4, 3, 3, 3), {}),
    "2-d kernel along one axis (CREPE's)": ((2, 4, 33, 1), (3, 4, 8, 1),
                                            {"pads": [3, 0, 4, 0]}),
    "2-d same-upper, stride": ((1, 2, 9, 8), (3, 2, 4, 3),
                               {"auto_pad": "SAME_UPPER", "strides": [2, 3]}),
    "2-d same-lower, even kernel": ((1, 2, 9, 8), (3, 2, 2, 4),
                                    {"auto_pad": "SAME_LOWER", "strides": [1, 2]}),
    "2-d dilation": ((1, 2, 9, 8), (3, 2, 2, 3), {"dilations": [3, 1], "pads": [2, 1, 0, 1]}),
    "2-d valid": ((2, 2, 6, 5), (3, 2, 3, 2), {"auto_pad": "VALID", "strides": [1, 2]}),
    "3-d": ((1, 2, 5, 6, 4), (2, 2, 3, 2, 3), {"pads": [1, 0, 1, 0, 1, 1],
                                               "strides": [1, 2, 1]}),
    "1x1": ((2, 5, 4, 4), (3, 5, 1, 1), {}),
    "stride past the end": ((1, 1, 10, 10), (1, 1, 3, 3), {"strides": [4, 4],
                                                          "pads": [0, 0, 2, 2]}),
}


@pytest.mark.parametrize("case", sorted(CONV_ATTRS))
def test_conv_patches_are_the_onnxruntime_probes(case):
    """The patches gathered from the padded input are the values the one-hot probe copies
    out of onnxruntime's own convolution: the same rows, columns and numbers."""
    from onnxprune.rules.layers import conv_patches, probe_patches

    x_shape, w_shape, attrs = CONV_ATTRS[case]
    node = gs.Node("Conv", "c", attrs=dict(attrs), inputs=[
        gs.Variable("x"), gs.Constant("w", _w(*w_shape))], outputs=[gs.Variable("y")])
    x = RNG.standard_normal(x_shape).astype(np.float32)
    x[x < -1.0] = 0.0  # zeros in the data too
    got, want = conv_patches(node, x), probe_patches(node, x)
    assert got is not None and got.dtype == np.float32
    assert got.shape == want.shape and np.array_equal(got, want)


def test_conv_patches_decline_what_they_do_not_read():
    """Grouped convolutions, unknown auto_pad values and SAME padding with a dilation (which
    onnxruntime refuses) go to the probe (None here)."""
    from onnxprune.rules.layers import conv_patches

    x = RNG.standard_normal((1, 4, 6, 6)).astype(np.float32)
    grouped = gs.Node("Conv", "g", attrs={"group": 2}, inputs=[
        gs.Variable("x"), gs.Constant("w", _w(2, 2, 3, 3))], outputs=[gs.Variable("y")])
    odd = gs.Node("Conv", "o", attrs={"auto_pad": "SOMETHING"}, inputs=[
        gs.Variable("x"), gs.Constant("w", _w(2, 4, 3, 3))], outputs=[gs.Variable("y")])
    same = gs.Node("Conv", "s", attrs={"auto_pad": "SAME_UPPER", "dilations": [2, 2]}, inputs=[
        gs.Variable("x"), gs.Constant("w", _w(2, 4, 3, 3))], outputs=[gs.Variable("y")])
    assert conv_patches(grouped, x) is None and conv_patches(odd, x) is None
    assert conv_patches(same, x) is None
