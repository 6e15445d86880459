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


def unary(op, positive=False, unit=False, **attrs):
    """``op`` on x, or on |x| + 0.1 (``positive``), or on tanh(x) in (-1, 1) (``unit``)."""
    def build(b, x):
        if positive:
            x = b.op("Add", [b.op("Abs", [x]), b.const(np.float32(0.1))])
        if unit:
            x = b.op("Tanh", [x])
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


def with_infs(build):
    """``build`` on x / d, where d is 0 at a third of the positions: +-inf there."""
    zeros = (np.random.default_rng(7).random(X4) < 0.3).astype(np.float32)
    return lambda b, x: build(b, b.op("Div", [x, b.const(1 - zeros)]))


def einsum(equation, *shapes, out=None):
    """Einsum of x and constant operands of ``shapes`` (``out``: the output shape, where
    shape inference cannot tell it)."""
    def build(b, x):
        consts = [b.const(randn(*sh, seed=i + 1)) for i, sh in enumerate(shapes)]
        y = b.op("Einsum", [x, *consts], equation=equation)
        return [y if out is None else (y, out)]
    return build


def cumsum(axis, dtype=np.int64, integer=False, **attrs):
    """CumSum along ``axis`` (an input of ``dtype``), of x or of int64(3 x)."""
    def build(b, x):
        if integer:
            x = b.op("Cast", [b.op("Mul", [x, b.const(np.float32(3))])], to=TensorProto.INT64)
        y = b.op("CumSum", [x, b.const(np.array(axis, dtype))], **attrs)
        return [b.op("Cast", [y], to=TensorProto.FLOAT) if integer else y]
    return build


def group_norm(shape, groups, per, dtype=None, offset=False, **attrs):
    """GroupNormalization of x of ``shape`` with ``per`` scales/biases; with ``dtype``, run
    in that type. ``offset``: on 64 + round(4 x) / 16 instead, where float32 sums over a
    group of 8 are exact (so every float32 implementation agrees) but E[x^2] - E[x]^2 loses
    ~1e-3 to float32 rounding: whether the statistics are float or double shows."""
    def build(b, x):
        np_type = helper.tensor_dtype_to_np_dtype(dtype or TensorProto.FLOAT)
        if offset:
            x = b.op("Mul", [b.op("Round", [b.op("Mul", [x, b.const(np.float32(4))])]),
                             b.const(np.float32(1 / 16))])
            x = b.op("Add", [x, b.const(np.float32(64))])
        if dtype:
            x = b.op("Cast", [x], to=dtype)
        y = b.op("GroupNormalization", [x, b.const(randn(per, seed=1).astype(np_type)),
                                        b.const(randn(per, seed=2).astype(np_type))],
                 num_groups=groups, **attrs)
        return [(b.op("Cast", [y], to=TensorProto.FLOAT) if dtype else y, shape)]
    return build


GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def recurrent_inputs(op, shape, hidden, num_dir, bias=True, lens=None, initial=False,
                     peephole=False, layout=0, r_scale=0.6, seed=10):
    """W, R (entries of standard deviation ``r_scale``) and the optional inputs of a recurrent
    node on x of ``shape`` ([T, B, I], or [B, T, I] with ``layout``), as arrays; None where
    absent."""
    batch, size = (shape[0] if layout else shape[1]), shape[2]
    g = GATES[op] * hidden
    state = (batch, num_dir, hidden) if layout else (num_dir, batch, hidden)
    arrays = {"W": randn(num_dir, g, size, seed=seed) * 0.6,
              "R": randn(num_dir, g, hidden, seed=seed + 1) * r_scale,
              "B": randn(num_dir, 2 * g, seed=seed + 2) * 0.5 if bias else None,
              "sequence_lens": None if lens is None else np.array(lens, np.int32),
              "initial_h": randn(*state, seed=seed + 3) if initial else None}
    if op == "LSTM":
        arrays["initial_c"] = randn(*state, seed=seed + 4) if initial else None
        arrays["P"] = randn(num_dir, 3 * hidden, seed=seed + 5) * 0.5 if peephole else None
    return arrays


def recurrent(op, shape, hidden=3, outputs=None, direction="forward", bias=True, lens=None,
              initial=False, peephole=False, layout=0, r_scale=0.6, **attrs):
    """One RNN/GRU/LSTM node on x; ``outputs``: which of Y, Y_h(, Y_c) it has ("" omits)."""
    num_dir = 2 if direction == "bidirectional" else 1
    arrays = recurrent_inputs(op, shape, hidden, num_dir, bias, lens, initial, peephole, layout,
                              r_scale)

    def build(b, x):
        ins = [x] + [b.const(a, k) if a is not None else "" for k, a in arrays.items()]
        while not ins[-1]:
            ins.pop()
        names = outputs or (["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"])
        outs = [f"{op}_{o}" if o else "" for o in names]
        extra = {"layout": layout} if layout else {}  # (no such attribute before opset 14)
        b.nodes.append(helper.make_node(op, ins, outs, hidden_size=hidden, direction=direction,
                                        **extra, **attrs))
        return [o for o in outs if o]
    return build


def recurrent_cases():
    T = (5, 3, 4)  # [seq, batch, input]
    LONG = (300, 2, 4)  # with a contracting recurrence (see test_recurrent_chaotic_long_...)
    lens = [5, 2, 4]
    out = []
    for op in ("RNN", "GRU", "LSTM"):
        out += [
            (f"{op}-forward", 14, T, recurrent(op, T)),
            (f"{op}-no-bias", 14, T, recurrent(op, T, bias=False)),
            (f"{op}-reverse-initial", 14, T, recurrent(op, T, direction="reverse",
                                                        initial=True)),
            (f"{op}-bidirectional", 14, T, recurrent(op, T, direction="bidirectional")),
            (f"{op}-lens", 14, T, recurrent(op, T, lens=lens, initial=True)),
            (f"{op}-reverse-lens", 14, T, recurrent(op, T, direction="reverse", lens=lens,
                                                     initial=True)),
            (f"{op}-bidirectional-lens-clip", 14, T, recurrent(
                op, T, direction="bidirectional", lens=lens, initial=True, clip=0.7)),
            (f"{op}-only-Y_h", 14, T, recurrent(op, T, outputs=["", "Y_h"],
                                                direction="bidirectional")),
            (f"{op}-only-Y", 14, T, recurrent(op, T, outputs=["Y"], lens=lens)),
            (f"{op}-long", 14, LONG, recurrent(op, LONG, hidden=16, direction="bidirectional",
                                                lens=[300, 170], r_scale=0.15)),
            (f"{op}-opset7", 7, T, recurrent(op, T, direction="bidirectional", lens=lens)),
        ]
    out += [
        ("RNN-relu", 14, T, recurrent("RNN", T, activations=["Relu"])),
        ("RNN-bidirectional-activations", 14, T, recurrent(
            "RNN", T, direction="bidirectional", lens=lens, activations=["LeakyRelu", "Affine"],
            activation_alpha=[0.2, 0.7], activation_beta=[0.3])),  # Affine's beta is the 1st
        ("RNN-activation-default-alpha", 14, T, recurrent("RNN", T, activations=["LeakyRelu"])),
        ("RNN-reverse-activations", 14, T, recurrent(
            "RNN", T, direction="reverse", activations=["ScaledTanh"], activation_alpha=[1.5],
            activation_beta=[0.8])),
        ("GRU-linear-before-reset", 14, T, recurrent("GRU", T, linear_before_reset=1)),
        ("GRU-linear-before-reset-no-bias", 14, T, recurrent(
            "GRU", T, bias=False, linear_before_reset=1, direction="reverse")),
        ("GRU-bidirectional-linear-before-reset-lens-clip", 14, T, recurrent(
            "GRU", T, direction="bidirectional", lens=lens, initial=True, clip=0.5,
            linear_before_reset=1)),
        ("GRU-activations", 14, T, recurrent(
            "GRU", T, direction="bidirectional", lens=lens,
            activations=["HardSigmoid", "LeakyRelu", "Sigmoid", "ScaledTanh"],
            activation_alpha=[0.3, 0.1, 1.2], activation_beta=[0.4, 0.9])),
        ("GRU-activations-defaults", 14, T, recurrent(
            "GRU", T, activations=["HardSigmoid", "Elu"])),
        ("GRU-activations-more", 14, T, recurrent(
            "GRU", T, direction="bidirectional",
            activations=["Sigmoid", "Softsign", "Sigmoid", "Softplus"])),
        ("GRU-empty-sequence", 14, T, recurrent("GRU", T, direction="bidirectional",
                                                 lens=[5, 0, 3], initial=True)),
        ("LSTM-peephole", 14, T, recurrent("LSTM", T, peephole=True, initial=True)),
        ("LSTM-bidirectional-peephole-lens-clip", 14, T, recurrent(
            "LSTM", T, direction="bidirectional", lens=lens, initial=True, peephole=True,
            clip=0.6)),
        ("LSTM-input-forget", 14, T, recurrent("LSTM", T, direction="reverse", lens=lens,
                                               peephole=True, input_forget=1)),
        ("LSTM-activations", 14, T, recurrent(
            "LSTM", T, direction="bidirectional", lens=lens, initial=True,
            activations=["HardSigmoid", "Elu", "Softsign", "Sigmoid", "ThresholdedRelu",
                         "Relu"],
            activation_alpha=[0.25, 0.8, 0.1], activation_beta=[0.45])),
        ("LSTM-activations-affine", 14, T, recurrent(
            "LSTM", T, activations=["Sigmoid", "Affine", "ScaledTanh"],
            activation_alpha=[0.5, 1.3], activation_beta=[0.2, 0.7])),
        ("LSTM-activations-zero-defaults", 14, T, recurrent(
            "LSTM", T, activations=["Sigmoid", "ThresholdedRelu", "Affine"])),
        ("LSTM-only-Y_c", 14, T, recurrent("LSTM", T, outputs=["", "", "Y_c"], lens=lens,
                                           direction="reverse")),
        ("LSTM-empty-sequence", 14, T, recurrent("LSTM", T, direction="bidirectional",
                                                  lens=[0, 5, 3], initial=True)),
    ]
    return out


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
# GroupNormalization inputs (its output shape is not inferred); GN8: 8 elements per 2 groups
GN, GN3, GN8 = (2, 6, 5, 4), (2, 6, 7), (3, 4, 2, 2)
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
    # unary math, IsNaN/IsInf, Shrink
    *[(f"unary-{op}", 18, X4, unary(op)) for op in ("Atan", "Sinh", "Cosh", "Asinh", "Tan")],
    *[(f"unary-{op}", 18, X4, unary(op, unit=True)) for op in ("Asin", "Acos", "Atanh")],
    ("unary-Acosh", 18, X4, unary("Acosh", positive=True)),  # NaN below 1
    ("unary-Acos-nan", 18, X4, unary("Acos")),  # NaN outside [-1, 1]
    ("isnan", 18, X4, to_float(lambda b, x: [b.op("IsNaN", [b.op("Sqrt", [x])])])),
    ("isnan-of-inf", 18, X4, with_infs(to_float(lambda b, x: [b.op("IsNaN", [x])]))),
    *[(f"isinf-neg{neg}-pos{pos}", 20, X4,
       with_infs(to_float(lambda b, x, neg=neg, pos=pos: [
           b.op("IsInf", [x], detect_negative=neg, detect_positive=pos)])))
      for neg in (0, 1) for pos in (0, 1)],
    ("isinf-default", 10, X4, with_infs(to_float(lambda b, x: [b.op("IsInf", [x])]))),
    ("shrink", 9, X4, unary("Shrink")),
    ("shrink-bias-lambd", 9, X4, unary("Shrink", bias=0.3, lambd=1.1)),
    ("shrink-int", 9, X4, to_float(lambda b, x: [b.op("Shrink", [b.op("Cast", [
        b.op("Mul", [x, b.const(np.float32(3))])], to=TensorProto.INT32)], bias=1.5,
        lambd=1.0)])),
    # Einsum
    ("einsum-batched-matmul", 12, (2, 3, 4), einsum("bij,bjk->bik", (2, 4, 5))),
    ("einsum-spaces", 12, (2, 3, 4), einsum(" bij , bjk -> bik ", (2, 4, 5))),
    ("einsum-attention", 12, (2, 3, 5, 4), einsum("bhqd,bhkd->bhqk", (2, 3, 6, 4))),
    ("einsum-linear", 12, (2, 5, 4), einsum("bsi,oi->bso", (6, 4))),
    ("einsum-implicit", 12, (3, 4), einsum("ij,jk", (4, 5))),
    ("einsum-implicit-sorted", 12, (3, 4), einsum("kj,ji", (4, 5))),  # -> "ik"
    ("einsum-implicit-transpose", 12, (3, 4), einsum("ba")),
    ("einsum-implicit-dot", 12, (3, 4), einsum("ij,ij", (3, 4))),
    ("einsum-ellipsis", 12, (2, 3, 4, 5), einsum("...ij,jk->...ik", (5, 6))),
    ("einsum-ellipsis-broadcast", 12, (2, 3, 4, 5), einsum("...ij,...jk->...ik",
                                                                  (1, 3, 5, 6))),
    ("einsum-ellipsis-implicit", 12, (2, 3, 4, 5), einsum("...ij,...jk", (2, 1, 5, 6))),
    ("einsum-ellipsis-middle", 12, (4, 2, 3, 5), einsum("i...j,j->...i", (5,))),
    ("einsum-ellipsis-sum", 12, (2, 3, 4), einsum("...i->...")),
    ("einsum-diagonal", 12, (4, 4), einsum("ii->i")),
    ("einsum-trace", 12, (4, 4), einsum("ii")),
    ("einsum-reduce-outer", 12, (3, 4), einsum("ij,k->jk", (5,))),
    ("einsum-three-operands", 12, (3, 4), einsum("ij,jk,kl->il", (4, 5), (5, 2))),
    # CumSum
    ("cumsum", 14, X4, cumsum(1)),
    ("cumsum-axis-int32-neg", 14, X4, cumsum([-1], np.int32)),
    ("cumsum-exclusive", 14, X4, cumsum(2, exclusive=1)),
    ("cumsum-reverse", 14, X4, cumsum(3, reverse=1)),
    ("cumsum-exclusive-reverse", 14, X4, cumsum(-2, exclusive=1, reverse=1)),
    ("cumsum-int64", 14, X4, cumsum(3, integer=True)),
    ("cumsum-int64-exclusive-reverse", 14, X4, cumsum(0, integer=True, exclusive=1,
                                                      reverse=1)),
    ("cumsum-position-ids", 14, (2, 7), lambda b, x: [b.op("Cast", [b.op("Sub", [b.op(
        "CumSum", [b.op("Cast", [b.op("Greater", [x, b.const(np.float32(-1))])],
                           to=TensorProto.INT64), b.const(np.int64(1))]),
        b.const(np.int64(1))])], to=TensorProto.FLOAT)]),
    # GroupNormalization: per channel (opset 21; opset 18, per group, is GROUPNORM_18 below)
    ("groupnorm-21", 21, GN, group_norm(GN, 3, 6)),
    ("groupnorm-21-eps-3d", 21, GN3, group_norm(GN3, 2, 6, epsilon=1e-2)),
    ("groupnorm-21-stash-float-of-double", 21, GN8,
     group_norm(GN8, 2, 4, TensorProto.DOUBLE, offset=True, stash_type=TensorProto.FLOAT)),
    ("groupnorm-21-stash-double-of-float", 21, GN8,
     group_norm(GN8, 2, 4, offset=True, stash_type=TensorProto.DOUBLE)),
    ("groupnorm-21-stash-default-float", 21, GN8,
     group_norm(GN8, 2, 4, TensorProto.DOUBLE, offset=True)),
    # LpPool
    ("lppool", 11, (2, 3, 9, 8), node("LpPool", kernel_shape=[3, 3])),
    ("lppool-p3-pads-strides", 11, (2, 3, 9, 8),
     node("LpPool", kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1], p=3)),
    ("lppool-p1-same-upper", 11, (2, 3, 9, 8),
     node("LpPool", kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_UPPER", p=1)),
    ("lppool-same-lower", 11, (2, 3, 9, 8),
     node("LpPool", kernel_shape=[2, 3], strides=[2, 3], auto_pad="SAME_LOWER")),
    ("lppool-valid", 11, (2, 3, 9, 8),
     node("LpPool", kernel_shape=[2, 3], strides=[2, 2], auto_pad="VALID")),
    ("lppool-1d", 11, (2, 3, 9), node("LpPool", kernel_shape=[3], strides=[2], pads=[1, 1])),
    ("lppool-18-ceil", 18, (2, 3, 9, 8),
     node("LpPool", kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1)),
    ("lppool-18-ceil-pads", 18, (2, 3, 10, 7),
     node("LpPool", kernel_shape=[3, 3], strides=[3, 2], pads=[1, 1, 1, 1], ceil_mode=1,
          p=3)),
    ("lppool-18-dilations", 18, (2, 3, 9, 8),
     node("LpPool", kernel_shape=[2, 2], dilations=[2, 2], strides=[1, 2])),
    ("lppool-18-dilations-pads", 18, (2, 3, 9, 8),
     node("LpPool", kernel_shape=[2, 3], dilations=[2, 1], pads=[1, 1, 0, 2], p=1)),
    ("global-lppool", 11, X4, node("GlobalLpPool")),
    ("global-lppool-p3-3d", 11, (2, 3, 4, 3, 2), node("GlobalLpPool", p=3)),
    # recurrent
    *recurrent_cases(),
]


@pytest.mark.parametrize("opset,shape,build", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_op_matches_onnxruntime(opset, shape, build):
    b = GraphBuilder(seed=0, opset=opset)
    x = b.input("x", list(shape))
    model = b.build(build(b, x))
    assert_matches(model, {"x": randn(*shape)})


GROUPNORM_18 = [  # scale and bias per group
    ("groupnorm-18", GN, group_norm(GN, 3, 3)),
    ("groupnorm-18-eps-3d", GN3, group_norm(GN3, 2, 2, epsilon=1e-2)),
    ("groupnorm-18-one-group", GN, group_norm(GN, 1, 1)),
    ("groupnorm-18-instance", (2, 6, 5), group_norm((2, 6, 5), 6, 6)),
    ("groupnorm-18-double", GN, group_norm(GN, 3, 3, TensorProto.DOUBLE)),
]


@pytest.mark.parametrize("shape,build", [c[1:] for c in GROUPNORM_18],
                         ids=[c[0] for c in GROUPNORM_18])
def test_group_normalization_18_matches_onnxruntime(shape, build):
    """onnx's checker rejects GroupNormalization-18 (deprecated), onnxruntime still runs it:
    the model is built without the check."""
    b = GraphBuilder(seed=0, opset=18)
    x = b.input("x", list(shape))
    outs = [helper.make_tensor_value_info(y, TensorProto.FLOAT, list(sh)) for y, sh in build(b, x)]
    model = helper.make_model(helper.make_graph(b.nodes, "g", b.inputs, outs, b.inits),
                              opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
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


def test_lp_pool_gradients_are_finite_on_all_zero_windows():
    """(sum |x|^p)^(1/p) has an infinite slope at 0: a window of zeros (e.g. the channels of
    a layer being pruned to nothing) must pass a zero gradient, not inf * 0 = NaN."""
    b = GraphBuilder(opset=18)
    x = b.input("x", [1, 2, 4, 4])
    model = b.build([b.op("LpPool", [x], kernel_shape=[2, 2], strides=[2, 2]),
                     b.op("GlobalLpPool", [x], p=3)])
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0, 0, 0] = 1.0
    x.requires_grad_()
    sum(y.sum() for y in TorchGraph(model)(x)).backward()
    assert torch.isfinite(x.grad).all() and x.grad[0, 0, 0, 0] > 0


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


# -- recurrent ops: batch-first layout and gradients ------------------------------------------

LAYOUT_CASES = [
    ("RNN", {"direction": "bidirectional", "lens": [4, 2, 5]}),
    ("GRU", {"direction": "bidirectional", "lens": [4, 2, 5], "linear_before_reset": 1}),
    ("GRU", {"direction": "reverse", "clip": 0.5}),
    ("LSTM", {"direction": "bidirectional", "lens": [4, 2, 5], "peephole": True, "clip": 0.8}),
    ("LSTM", {"direction": "reverse", "activations": ["HardSigmoid", "Tanh", "Softsign"]}),
]


@pytest.mark.parametrize("op,kw", LAYOUT_CASES,
                         ids=[f"{op}-{'-'.join(kw)}" for op, kw in LAYOUT_CASES])
def test_recurrent_layout_1_matches_layout_0_in_onnxruntime(op, kw):
    """onnxruntime rejects layout=1 (batch first): torch on the layout-1 node must equal
    onnxruntime on the same node in layout 0, inputs and outputs transposed."""
    seq, batch = (5, 3, 4), (3, 5, 4)
    b1 = GraphBuilder(seed=0, opset=14)
    model1 = b1.build(recurrent(op, batch, layout=1, initial=True, **kw)(b1, b1.input("x", batch)))
    b0 = GraphBuilder(seed=0, opset=14)
    model0 = b0.build(recurrent(op, seq, initial=True, **kw)(b0, b0.input("x", seq)))
    for i1, i0 in zip(model1.graph.initializer, model0.graph.initializer, strict=True):
        a0 = onnx.numpy_helper.to_array(i0)
        if i1.name.startswith("initial"):  # the same states, [B, D, H] instead of [D, B, H]
            i1.CopyFrom(onnx.numpy_helper.from_array(a0.transpose(1, 0, 2), i1.name))
        else:
            np.testing.assert_array_equal(onnx.numpy_helper.to_array(i1), a0)
    x = randn(*batch)
    want = session(model0).run(None, {"x": x.transpose(1, 0, 2)})
    with torch.no_grad():
        got = [t.numpy() for t in TorchGraph(model1).run({"x": x})]
    want = [want[0].transpose(2, 0, 1, 3)] + [w.transpose(1, 0, 2) for w in want[1:]]
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert np.abs(g - w).max() / np.abs(w).max() < TOL


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_recurrent_gradients_reach_weights(op):
    """W, R, B (and the initial states and LSTM's peepholes) are trained: all get gradients,
    also with sequence_lens, both directions and clip."""
    b = GraphBuilder(opset=14)
    shape = (6, 3, 4)
    model = b.build(recurrent(op, shape, direction="bidirectional", lens=[6, 3, 1], initial=True,
                              peephole=True, clip=2.0)(b, b.input("x", shape)))
    g = TorchGraph(model)
    assert {n.split("_")[0] for n in g.param_names.values()} >= {"W", "R", "B", "initial"}
    outs = g(torch.from_numpy(randn(*shape)))
    sum((y**2).mean() for y in outs).backward()
    for key, p in g.params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), g.param_names[key]
        assert p.grad.abs().sum() > 0, g.param_names[key]


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_recurrent_gradients_are_exact(op):
    """Autograd through the step loop equals finite differences (double precision)."""
    from onnxprune.recover.ops import OPS, Node

    arrays = recurrent_inputs(op, (4, 2, 3), 2, 2, lens=[4, 2], initial=True, peephole=True)
    attrs = {"hidden_size": 2, "direction": "bidirectional", "clip": 3.0,
             "linear_before_reset": 1}
    node = Node(op, "n", 14, 3 if op == "LSTM" else 2, attrs)
    lens = torch.from_numpy(arrays.pop("sequence_lens"))
    x = torch.from_numpy(randn(4, 2, 3)).double().requires_grad_()
    params = [torch.from_numpy(a).double().requires_grad_() for a in arrays.values()]

    def run(x, w, r, bias, *rest):
        return OPS[op](node, x, w, r, bias, lens, *rest)

    assert torch.autograd.gradcheck(run, (x, *params))


CHAOTIC = [("RNN", (128, 2, 4), 16), ("GRU", (256, 2, 4), 32), ("LSTM", (512, 2, 4), 32)]


@pytest.mark.parametrize("op,shape,hidden", CHAOTIC, ids=[c[0] for c in CHAOTIC])
def test_recurrent_chaotic_long_sequence_within_onnxruntime_own_sensitivity(op, shape, hidden):
    """The one looser bound. With recurrent weights that expand (here entries of deviation 0.6
    in R: spectral radius ~ 0.6 sqrt(hidden) > 1) a long sequence amplifies float32 rounding
    step after step, so no float32 implementation can stay within TOL of onnxruntime:
    onnxruntime itself moves by 1e-5..1e-2 when the input moves by one ulp. What can be asked
    is that torch differ from onnxruntime no more than 10 times that sensitivity (here 0.4-0.6
    times; at most 8 times over other inputs, with a one-sided perturbation only)."""
    b = GraphBuilder(seed=0, opset=14)
    model = b.build(recurrent(op, shape, hidden=hidden, direction="bidirectional")(
        b, b.input("x", shape)))
    x = randn(*shape)
    sess = session(model)
    want = sess.run(None, {"x": x})

    def rel(got):
        return max(np.abs(g - w).max() / np.abs(w).max() for g, w in zip(got, want, strict=True))

    sensitivity = max(rel(sess.run(None, {"x": np.nextafter(x, np.float32(to))}))
                      for to in (np.inf, -np.inf))
    with torch.no_grad():
        diff = rel([t.numpy() for t in TorchGraph(model).run({"x": x})])
    assert sensitivity > TOL  # the case is one where TOL cannot hold
    assert diff < 10 * sensitivity, (diff, sensitivity)
