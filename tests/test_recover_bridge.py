"""TorchGraph (recover.torch_bridge) against onnxruntime, op by op and on the model zoo;
write_back round trips; gradients reach the weights."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxprune.ir.runtime import session
from onnxprune.zoo.builder import GraphBuilder, demo_cnn

torch = pytest.importorskip("torch")

from onnxprune.recover.torch_bridge import TorchGraph  # noqa: E402

TOL = 1e-5  # max |torch - onnxruntime| relative to the output's largest magnitude


def rel_diffs(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
              graph: TorchGraph | None = None) -> list[float]:
    """Per output: max abs difference / output scale (integer outputs must be equal)."""
    want = session(model).run(None, feeds)
    with torch.no_grad():
        got = [t.numpy() for t in (graph or TorchGraph(model)).run(feeds)]
    diffs = []
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        if not np.issubdtype(w.dtype, np.floating):
            assert np.array_equal(g, w)
            diffs.append(0.0)
            continue
        assert np.array_equal(np.isnan(g), np.isnan(w))
        g, w = np.nan_to_num(g.astype(np.float64)), np.nan_to_num(w.astype(np.float64))
        diffs.append(float(np.abs(g - w).max(initial=0.0) / max(np.abs(w).max(initial=0.0), 1e-6)))
    return diffs


def assert_matches(model, feeds, graph=None):
    diffs = rel_diffs(model, feeds, graph)
    assert max(diffs) < TOL, diffs


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def ints(*values):
    return np.array(values, np.int64)


# -- op cases: (id, opset, input shape, build(b, x) -> output names) ---------------------------


def unary(op, positive=False, **attrs):
    def build(b, x):
        if positive:
            x = b.op("Add", [b.op("Abs", [x]), b.const(np.float32(0.1))])
        return [b.op(op, [x], **attrs)]
    return build


def binary(op, shape, positive=False):
    def build(b, x):
        y = b.const(randn(*shape, seed=1))
        if positive:
            x = b.op("Add", [b.op("Abs", [x]), b.const(np.float32(0.5))])
        return [b.op(op, [x, y])]
    return build


def node(op, *consts, n_out=1, **attrs):
    """One node on x and constant inputs ("" skips an optional input)."""
    def build(b, x):
        ins = [x] + [c if isinstance(c, str) else b.const(c) for c in consts]
        out = b.op(op, ins, n_out=n_out, **attrs)
        return out if isinstance(out, list) else [out]
    return build


def conv(cin, cout, k, group=1, bias=True, transpose=False, **attrs):
    def build(b, x):
        shape = (cin, cout // group, *k) if transpose else (cout, cin // group, *k)
        ins = [x, b.const(randn(*shape, seed=2) * 0.3)]
        if bias:
            ins.append(b.const(randn(cout, seed=3)))
        return [b.op("ConvTranspose" if transpose else "Conv", ins, kernel_shape=list(k),
                     group=group, **attrs)]
    return build


def to_float(build):
    """Cast the (integer or bool) outputs of ``build`` to float."""
    return lambda b, x: [b.op("Cast", [y], to=TensorProto.FLOAT) for y in build(b, x)]


def shape_chain(b, x):
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape: a dynamic-batch flatten."""
    batch = b.op("Gather", [b.op("Shape", [x]), b.const(np.int64(0))], axis=0)
    target = b.op("Concat", [b.op("Unsqueeze", [batch, b.const(ints(0))]), b.const(ints(-1))],
                  axis=0)
    return [b.op("Reshape", [x, target])]


def resize_cases():
    out = []
    for coord in ("asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel"):
        for nearest in ("floor", "round_prefer_floor", "round_prefer_ceil", "ceil"):
            for scales in ((1, 1, 2, 3), (1, 1, 0.5, 0.6), (1, 1, 1.7, 0.75)):
                out.append((f"resize-nearest-{coord}-{nearest}-{scales}", 13, (2, 3, 6, 7),
                            node("Resize", "", np.array(scales, np.float32), mode="nearest",
                                 coordinate_transformation_mode=coord, nearest_mode=nearest)))
        for scales in ((1, 1, 2, 3), (1, 1, 0.5, 0.6), (1, 1, 1.7, 0.75)):
            out.append((f"resize-linear-{coord}-{scales}", 13, (2, 3, 6, 7),
                        node("Resize", "", np.array(scales, np.float32), mode="linear",
                             coordinate_transformation_mode=coord)))
        for sizes in ((2, 3, 9, 4), (2, 3, 1, 11)):
            out.append((f"resize-sizes-{coord}-{sizes}", 11, (2, 3, 6, 7),
                        node("Resize", np.zeros(0, np.float32), np.zeros(0, np.float32),
                             ints(*sizes), mode="linear", coordinate_transformation_mode=coord)))
    out += [
        ("resize-opset19-axes", 19, (2, 3, 6, 7),
         node("Resize", "", np.array([2.0, 0.5], np.float32), axes=[2, 3])),
        ("resize-opset10", 10, (2, 3, 6, 7),
         node("Resize", np.array([1, 1, 2, 0.5], np.float32), mode="nearest")),
        ("upsample-nearest", 9, (2, 3, 5, 4),
         node("Upsample", np.array([1, 1, 2, 3], np.float32), mode="nearest")),
        ("upsample-linear", 9, (2, 3, 5, 4),
         node("Upsample", np.array([1, 1, 2, 1.5], np.float32), mode="linear")),
    ]
    return out


X4 = (2, 3, 5, 6)
CASES = [
    # elementwise and activations
    *[(f"unary-{op}", 18, X4, unary(op)) for op in (
        "Neg", "Abs", "Exp", "Relu", "Sigmoid", "Tanh", "Softplus", "Softsign", "Erf", "Floor",
        "Ceil", "Round", "Sign", "Sin", "Cos", "HardSwish", "Mish", "Identity", "Selu",
        "Celu", "Elu", "LeakyRelu", "HardSigmoid", "ThresholdedRelu")],
    *[(f"unary-{op}", 17, X4, unary(op, positive=True)) for op in ("Sqrt", "Log", "Reciprocal")],
    ("attrs-LeakyRelu", 17, X4, unary("LeakyRelu", alpha=0.3)),
    ("attrs-Elu", 17, X4, unary("Elu", alpha=0.5)),
    ("attrs-Selu", 17, X4, unary("Selu", alpha=1.5, gamma=0.9)),
    ("attrs-Celu", 17, X4, unary("Celu", alpha=2.0)),
    ("attrs-HardSigmoid", 17, X4, unary("HardSigmoid", alpha=0.3, beta=0.4)),
    ("gelu", 20, X4, unary("Gelu")),
    ("gelu-tanh", 20, X4, unary("Gelu", approximate="tanh")),
    *[(f"binary-{op}-{shape}", 17, X4, binary(op, shape)) for op in (
        "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean") for shape in ((3, 1, 6), (6,))],
    ("binary-Pow", 17, X4, binary("Pow", (3, 1, 1), positive=True)),
    ("variadic-Max", 17, X4, node("Max", randn(6, seed=4), randn(5, 1, seed=5))),
    ("variadic-Sum", 17, X4, node("Sum", randn(6, seed=4), randn(5, 1, seed=5))),
    ("variadic-Mean", 17, X4, node("Mean", randn(6, seed=4), randn(5, 1, seed=5))),
    ("prelu-channel", 17, X4, node("PRelu", randn(3, 1, 1, seed=4))),
    ("prelu-last-axis", 17, X4, node("PRelu", randn(6, seed=4))),
    ("clip-inputs", 17, X4, node("Clip", np.float32(-0.5), np.float32(0.7))),
    ("clip-max-only", 17, X4, node("Clip", "", np.float32(0.2))),
    ("clip-none", 13, X4, node("Clip")),
    ("clip-attrs", 10, X4, node("Clip", min=-0.3, max=0.4)),
    ("compare-where", 17, X4, lambda b, x: [b.op("Where", [
        b.op("Or", [b.op("Greater", [x, b.const(np.float32(0.5))]),
                    b.op("Equal", [b.op("Floor", [x]), b.const(np.float32(-1))])]),
        x, b.op("Where", [b.op("Less", [x, b.const(np.float32(-1))]), b.const(np.float32(-9)),
                          b.const(np.float32(3))])])]),
    ("mod-int", 17, X4, to_float(lambda b, x: [b.op("Mod", [b.op(
        "Cast", [b.op("Mul", [x, b.const(np.float32(10))])], to=TensorProto.INT64),
        b.const(ints(3))])])),
    ("mod-fmod", 17, X4, node("Mod", np.float32(0.3), fmod=1)),
    ("div-int", 17, X4, to_float(lambda b, x: [b.op("Div", [b.op(
        "Cast", [b.op("Mul", [x, b.const(np.float32(10))])], to=TensorProto.INT64),
        b.const(ints(3))])])),
    # layers
    ("conv", 17, (2, 4, 9, 8), conv(4, 6, (3, 3), pads=[1, 1, 1, 1])),
    ("conv-stride-dilation", 17, (2, 4, 11, 10),
     conv(4, 6, (3, 2), strides=[2, 3], dilations=[2, 1], pads=[1, 0, 2, 1])),
    ("conv-group", 17, (2, 4, 9, 8), conv(4, 6, (3, 3), group=2, bias=False)),
    ("conv-depthwise", 17, (2, 4, 9, 8), conv(4, 8, (3, 3), group=4, strides=[2, 2])),
    ("conv-same-upper", 17, (2, 4, 9, 8), conv(4, 6, (4, 3), auto_pad="SAME_UPPER",
                                                strides=[2, 2])),
    ("conv-same-lower", 17, (2, 4, 9, 8), conv(4, 6, (4, 3), auto_pad="SAME_LOWER",
                                                strides=[2, 2])),
    ("conv-valid", 17, (2, 4, 9, 8), conv(4, 6, (3, 3), auto_pad="VALID")),
    ("conv-1d", 17, (2, 4, 9), conv(4, 6, (3,), pads=[2, 1], strides=[2])),
    ("conv-3d", 17, (2, 2, 5, 6, 4), conv(2, 4, (3, 3, 2), pads=[1, 1, 0, 1, 1, 1])),
    ("convt", 17, (2, 4, 5, 6), conv(4, 6, (3, 3), transpose=True, strides=[2, 2],
                                     pads=[1, 1, 1, 1], output_padding=[1, 1])),
    ("convt-group-dilation", 17, (2, 4, 5, 6),
     conv(4, 6, (3, 2), group=2, transpose=True, strides=[2, 3], dilations=[2, 1],
          pads=[0, 1, 2, 0], output_padding=[1, 2])),
    ("convt-output-shape", 17, (2, 4, 5, 6),
     conv(4, 6, (3, 3), transpose=True, strides=[2, 2], output_shape=[10, 12])),
    ("convt-same-upper", 17, (2, 4, 5, 6),
     conv(4, 6, (3, 3), transpose=True, strides=[2, 2], auto_pad="SAME_UPPER")),
    ("convt-1d", 17, (2, 4, 7), conv(4, 2, (4,), transpose=True, strides=[3], bias=False)),
    ("gemm", 17, (4, 5), node("Gemm", randn(5, 3, seed=1), randn(3, seed=2))),
    ("gemm-trans-alpha-beta", 17, (5, 4),
     node("Gemm", randn(3, 5, seed=1), randn(1, seed=2), transA=1, transB=1, alpha=0.5,
          beta=2.0)),
    ("gemm-no-c", 17, (4, 5), node("Gemm", randn(5, 3, seed=1), alpha=1.5)),
    ("matmul-batched", 17, (2, 3, 4, 5), node("MatMul", randn(5, 7, seed=1))),
    ("matmul-broadcast", 17, (3, 4, 5), node("MatMul", randn(2, 1, 5, 6, seed=1))),
    ("batchnorm", 15, X4, node("BatchNormalization", randn(3, seed=1), randn(3, seed=2),
                               randn(3, seed=3), np.abs(randn(3, seed=4)) + 0.5,
                               epsilon=1e-3)),
    ("instancenorm", 17, X4, node("InstanceNormalization", randn(3, seed=1), randn(3, seed=2))),
    ("layernorm", 17, X4, node("LayerNormalization", randn(6, seed=1), randn(6, seed=2))),
    ("layernorm-axis1", 17, X4, node("LayerNormalization", randn(3, 5, 6, seed=1), axis=1,
                                     epsilon=1e-3)),
    ("softmax-11", 11, X4, node("Softmax")),
    ("softmax-11-axis2", 11, X4, node("Softmax", axis=2)),
    ("logsoftmax-11", 11, X4, node("LogSoftmax")),
    ("softmax-13", 13, X4, node("Softmax")),
    ("softmax-13-axis1", 13, X4, node("Softmax", axis=1)),
    ("logsoftmax-13-axis-neg", 13, X4, node("LogSoftmax", axis=-3)),
    ("maxpool", 17, (2, 3, 9, 8), node("MaxPool", kernel_shape=[3, 2], strides=[2, 2],
                                       pads=[1, 0, 1, 1])),
    ("maxpool-ceil", 17, (2, 3, 9, 8), node("MaxPool", kernel_shape=[2, 3], strides=[2, 2],
                                            ceil_mode=1)),
    ("maxpool-ceil-pads", 17, (2, 3, 10, 7), node("MaxPool", kernel_shape=[3, 3],
                                                  strides=[3, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
    ("maxpool-dilation", 17, (2, 3, 9, 8), node("MaxPool", kernel_shape=[2, 2],
                                                dilations=[2, 2], strides=[1, 2])),
    ("maxpool-same", 17, (2, 3, 9, 8), node("MaxPool", kernel_shape=[3, 2], strides=[2, 3],
                                            auto_pad="SAME_UPPER")),
    ("maxpool-1d", 17, (2, 3, 9), node("MaxPool", kernel_shape=[3], strides=[2], pads=[1, 1])),
    ("avgpool", 17, (2, 3, 9, 8), node("AveragePool", kernel_shape=[3, 3], strides=[2, 2])),
    ("avgpool-pads-exclude", 17, (2, 3, 9, 8),
     node("AveragePool", kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 0])),
    ("avgpool-pads-include", 17, (2, 3, 9, 8),
     node("AveragePool", kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 0],
          count_include_pad=1)),
    ("avgpool-ceil", 17, (2, 3, 9, 8), node("AveragePool", kernel_shape=[2, 3], strides=[2, 2],
                                            ceil_mode=1)),
    ("avgpool-ceil-pads-include", 17, (2, 3, 10, 7),
     node("AveragePool", kernel_shape=[3, 3], strides=[3, 2], pads=[1, 1, 1, 1], ceil_mode=1,
          count_include_pad=1)),
    ("avgpool-ceil-grow-include", 17, (2, 3, 8, 9),
     node("AveragePool", kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
          count_include_pad=1)),
    ("pools-ceil-last-window-in-padding", 17, (2, 3, 9, 9), lambda b, x: [
        b.op(op, [x], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)
        for op in ("MaxPool", "AveragePool")]),
    ("avgpool-same-lower", 17, (2, 3, 9, 8),
     node("AveragePool", kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_LOWER")),
    ("global-pools", 17, X4, lambda b, x: [b.op("GlobalAveragePool", [x]),
                                           b.op("GlobalMaxPool", [x])]),
    # shapes and indexing
    ("flatten", 17, X4, node("Flatten")),
    ("flatten-0", 17, X4, node("Flatten", axis=0)),
    ("flatten-neg", 17, X4, node("Flatten", axis=-1)),
    ("reshape-0-minus1", 17, X4, node("Reshape", ints(0, -1, 2))),
    ("reshape-allowzero", 17, X4, node("Reshape", ints(6, 5, -1), allowzero=1)),
    ("transpose", 17, X4, lambda b, x: [b.op("Transpose", [x]),
                                        b.op("Transpose", [x], perm=[0, 2, 3, 1])]),
    ("squeeze-unsqueeze-11", 11, (2, 1, 5, 1),
     lambda b, x: [b.op("Unsqueeze", [b.op("Squeeze", [x], axes=[1, -1])], axes=[0, -1]),
                   b.op("Squeeze", [x])]),
    ("squeeze-unsqueeze-13", 13, (2, 1, 5, 1),
     lambda b, x: [b.op("Unsqueeze", [b.op("Squeeze", [x, b.const(ints(1, -1))]),
                                      b.const(ints(0, -1))]),
                   b.op("Squeeze", [x])]),
    ("concat", 17, X4, lambda b, x: [b.op("Concat", [x, b.const(randn(2, 1, 5, 6)), x],
                                          axis=-3)]),
    ("split-11-attr", 11, X4, node("Split", n_out=2, axis=3, split=[2, 4])),
    ("split-11-equal", 11, X4, node("Split", n_out=3, axis=-1)),
    ("split-13-input", 13, X4, node("Split", ints(1, 2), n_out=2, axis=1)),
    ("split-18-num-outputs", 18, (2, 3, 5, 7), node("Split", n_out=3, axis=3, num_outputs=3)),
    ("slice", 13, X4, node("Slice", ints(1, -4), ints(100, -1), ints(3, 2))),
    ("slice-steps", 13, X4, node("Slice", ints(-1, 0, 5), ints(-100, 100, 1), ints(3, 1, 2),
                                 ints(-2, 2, -1))),
    ("slice-empty", 13, X4, node("Slice", ints(4), ints(2), ints(2))),
    ("gather-2d-neg", 13, X4, node("Gather", ints(-1, 0, 2, 1).reshape(2, 2), axis=2)),
    ("gather-scalar", 13, X4, node("Gather", np.int64(1), axis=1)),
    ("gather-elements", 13, X4, node("GatherElements", np.random.default_rng(0).integers(
        -3, 3, (2, 3, 5, 2)).astype(np.int64), axis=3)),
    ("pad-constant", 13, X4, node("Pad", ints(0, 1, 2, 0, 0, 0, 1, 3), np.float32(1.5))),
    ("pad-negative", 13, X4, node("Pad", ints(0, 0, -1, 2, 0, 0, 2, -3))),
    ("pad-reflect", 13, X4, node("Pad", ints(0, 0, 2, 3, 0, 0, 4, 1), mode="reflect")),
    ("pad-edge", 13, X4, node("Pad", ints(0, 1, 2, 3, 0, 2, 4, 1), mode="edge")),
    ("pad-axes-18", 18, X4, node("Pad", ints(1, 2, 3, 0), "", ints(-1, 1), mode="reflect")),
    ("pad-wrap-19", 19, X4, node("Pad", ints(0, 0, 2, 3, 0, 0, 1, 2), mode="wrap")),
    ("pad-attrs-2", 10, X4, node("Pad", pads=[0, 0, 1, 2, 0, 0, 2, 1], value=0.5)),
    ("expand", 13, (3, 1, 6), node("Expand", ints(2, 1, 4, 1))),
    ("tile", 13, X4, node("Tile", ints(1, 2, 1, 3))),
    ("shape-15-start-end", 15, X4, to_float(lambda b, x: [b.op("Shape", [x], start=1, end=-1),
                                                         b.op("Size", [x])])),
    ("constant-of-shape", 13, X4, lambda b, x: [b.op("Add", [x, b.op(
        "ConstantOfShape", [b.op("Shape", [x])],
        value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.25]))])]),
    ("constant-node", 13, X4, lambda b, x: [b.op("Mul", [x, b.op(
        "Constant", [], value=helper.make_tensor("v", TensorProto.FLOAT, [6], list(range(6))))]),
        b.op("Add", [x, b.op("Constant", [], value_float=2.5)]),
        b.op("Cast", [b.op("Constant", [], value_ints=[1, 2])], to=TensorProto.FLOAT)]),
    ("cast-roundtrip", 13, X4, lambda b, x: [b.op("Cast", [b.op(
        "Cast", [b.op("Mul", [x, b.const(np.float32(3))])], to=TensorProto.INT32)],
        to=TensorProto.FLOAT)]),
    ("range", 13, (4,), lambda b, x: [b.op("Add", [x, b.op("Cast", [b.op("Range", [
        b.const(np.int64(2)), b.const(np.int64(9)), b.const(np.int64(2))])],
        to=TensorProto.FLOAT)])]),
    ("dropout-12", 12, X4, node("Dropout", np.float32(0.5))),
    ("dropout-mask", 13, X4, lambda b, x: [b.op("Where", [
        b.op("Dropout", [x], n_out=2)[1], x, b.const(np.float32(0))])]),
    ("argmax", 13, X4, to_float(lambda b, x: [
        b.op("ArgMax", [x], axis=1), b.op("ArgMin", [x], axis=-1, keepdims=0),
        b.op("ArgMax", [b.op("Floor", [x])], axis=3, select_last_index=1)])),
    # reductions: axes as attribute (opset 13; ReduceSum takes an input) and as input (18)
    *[(f"{op}-13", 13, X4, node(op, axes=[1, -1])) for op in (
        "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceLogSumExp")],
    ("ReduceSum-13", 13, X4, node("ReduceSum", ints(1, -1), keepdims=0)),
    ("ReduceSum-13-all", 13, X4, node("ReduceSum")),
    ("ReduceSum-13-noop", 13, X4, node("ReduceSum", np.zeros(0, np.int64),
                                       noop_with_empty_axes=1)),
    *[(f"{op}-18", 18, X4, node(op, ints(0, 2), keepdims=0)) for op in (
        "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceSumSquare")],
    ("ReduceMean-18-all", 18, X4, node("ReduceMean")),
    *resize_cases(),
]


@pytest.mark.parametrize("opset,shape,build", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_op_matches_onnxruntime(opset, shape, build):
    b = GraphBuilder(seed=0, opset=opset)
    x = b.input("x", list(shape))
    model = b.build(build(b, x))
    assert_matches(model, {"x": randn(*shape)})


def test_dynamic_batch_shape_chain():
    b = GraphBuilder(seed=0, opset=17)
    x = b.input("x", ["batch", 3, 4])
    model = b.build(shape_chain(b, x))
    g = TorchGraph(model)
    for n in (1, 2, 5):
        assert_matches(model, {"x": randn(n, 3, 4)}, g)
        assert g(torch.zeros(n, 3, 4))[0].shape == (n, 12)


def test_unknown_op_names_op_and_node():
    b = GraphBuilder(seed=0, opset=17)
    x = b.input("x", [2, 3])
    y = b.op("Det", [b.op("Reshape", [x, b.const(ints(1, 1, -1))])], name="the_det")
    model = helper.make_model(helper.make_graph(
        b.nodes, "g", b.inputs, [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)],
        b.inits), opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(NotImplementedError, match="Det.*the_det"):
        TorchGraph(model)


def test_forward_positional_named_and_missing():
    model = demo_cnn()
    g = TorchGraph(model)
    x = randn(2, 3, 32, 32)
    with torch.no_grad():
        a, = g(torch.from_numpy(x))
        b, = g(image=x)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="image"):
        g.run({})


# -- the model zoo ----------------------------------------------------------------------------

ZOO_MODELS = ["mlp", "lenet", "vgg", "resnet_basic", "resnet_bottleneck", "mobilenetv2_small",
              "densenet_small", "unet", "autoencoder"]
VARIANTS = [(name, {}) for name in ZOO_MODELS] + [
    ("autoencoder", {"dynamic_batch": True}),  # Shape -> Slice -> Concat -> Reshape
    ("unet", {"dynamic_batch": True}),
    ("resnet_basic", {"dynamic_batch": True, "fold_bn": False}),
    ("lenet", {"dynamo": True}),
    ("autoencoder", {"dynamo": True, "dynamic_batch": True}),
    ("resnet_basic", {"dynamo": True, "dynamic_batch": True}),
]


def _variant_id(v):
    return "-".join([v[0], *v[1]]) if v[1] else v[0]


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")


@pytest.mark.parametrize("variant", VARIANTS, ids=[_variant_id(v) for v in VARIANTS])
def test_zoo_model_matches_onnxruntime(variant, zoo_dir):
    pytest.importorskip("onnxscript")
    from onnxprune.zoo.torch_zoo import ZOO, export_zoo_model

    name, kw = variant
    path = export_zoo_model(name, zoo_dir / f"{_variant_id(variant)}.onnx", **kw)
    model = onnx.load(path)
    g = TorchGraph(model)
    batches = (1, 3) if kw.get("dynamic_batch") else (1,)
    for n in batches:
        assert_matches(model, {"input": randn(n, *ZOO[name][1], seed=n)}, g)


def test_demo_cnn_matches_onnxruntime():
    assert_matches(demo_cnn(), {"image": randn(3, 3, 32, 32)})


# -- write_back and gradients -----------------------------------------------------------------


def test_write_back_unchanged_is_byte_identical():
    model = demo_cnn()
    out = TorchGraph(model).write_back(model)
    assert out.SerializeToString() == model.SerializeToString()
    assert out is not model


def test_write_back_changed_parameters_land_in_their_initializers():
    model = demo_cnn()
    g = TorchGraph(model)
    names = g.initializer_names()
    changed = {names[0], names[-1]}
    with torch.no_grad():
        for n in changed:
            g.param(n).add_(0.5)
    out = g.write_back(model)
    before = {i.name: i for i in model.graph.initializer}
    for init in out.graph.initializer:
        old, new = onnx.numpy_helper.to_array(before[init.name]), onnx.numpy_helper.to_array(init)
        assert new.shape == old.shape and new.dtype == old.dtype
        if init.name in changed:
            np.testing.assert_array_equal(new, old + np.float32(0.5))
        else:
            assert init.SerializeToString() == before[init.name].SerializeToString()
    assert [n.SerializeToString() for n in out.graph.node] == \
        [n.SerializeToString() for n in model.graph.node]
    onnx.checker.check_model(out, full_check=True)
    assert_matches(out, {"image": randn(2, 3, 32, 32)}, g)  # ORT on the new weights = torch


def test_write_back_rejects_a_different_model():
    g = TorchGraph(demo_cnn())
    b = GraphBuilder()
    x = b.input("x", [1, 4])
    with pytest.raises(ValueError, match="lacks initializer"):
        g.write_back(b.build([b.relu(x)]))


def test_gradients_reach_every_weight():
    model = demo_cnn()
    g = TorchGraph(model)
    assert {p.dtype for p in g.parameters()} == {torch.float32}
    assert len(g.param_names) == len(model.graph.initializer)  # all float here
    y, = g(torch.from_numpy(randn(2, 3, 32, 32)))
    (y**2).mean().backward()
    for key, p in g.params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), g.param_names[key]
        assert p.grad.abs().sum() > 0, g.param_names[key]


def test_integer_initializers_are_buffers():
    b = GraphBuilder(opset=17)
    x = b.input("x", ["n", 2, 3])
    model = b.build([b.reshape(b.relu(b.matmul(x, 3, 4)), [0, -1])])
    g = TorchGraph(model)
    assert len(list(g.parameters())) == 1
    assert any(t.dtype == torch.int64 for t in g.buffers())
    assert_matches(model, {"x": randn(5, 2, 3)}, g)


def test_parameter_keys_are_sanitized_and_map_back():
    names = ["a.b", "a_b", "forward", "0/x:1"]
    inits = [onnx.numpy_helper.from_array(np.full(3, i, np.float32), n)
             for i, n in enumerate(names)]
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Sum", ["x", *names], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], inits),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    g = TorchGraph(model)
    assert sorted(g.param_names.values()) == sorted(names)
    assert all(k.isidentifier() for k in g.params)
    assert [g.param(n)[0].item() for n in names] == [0, 1, 2, 3]
    assert_matches(model, {"x": randn(3)}, g)
