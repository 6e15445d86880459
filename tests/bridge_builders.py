"""Builders of the op cases the torch interpreter is checked on against onnxruntime
(tests/bridge_cases.py): each returns build(b, x) -> output names, for the zoo's GraphBuilder."""

import numpy as np
from onnx import TensorProto, helper


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


X4 = (2, 3, 5, 6)  # the usual 4-D input of the cases


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
