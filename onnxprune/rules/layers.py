"""Weighted layers as matrix products: the one place that knows their weight layouts.

Per output position a layer computes ``y = x W (+ b)``: ``rows(x)`` are the rows its data
input gives (a convolution's patch matrix, im2col order: input channel-major, then the kernel
taps), ``matrix()`` its weight as ``[inputs x kernel, outputs]`` with the bias as the solver
sees it, ``weight(mat)`` that matrix back in the layer's own layout and dtype. Compensation,
the refit search, reconstruction scores and BatchNorm folding read layers through this view;
the rules give it (``OpRule.layer``: Conv and ConvTranspose of one group, Gemm without
``transA``, MatMul with a constant 2-D weight).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

from ..ir.graph import input_or_none
from ..ir.runtime import session


class Layer:
    """A weighted layer ``node`` (its weight: ``node.inputs[1]``)."""

    op = ""
    intercept = True  # the layer adds a bias the solver fits (MatMul's is another node)
    spatial = False  # its rows are a feature map's positions (a patch matrix per sample)
    channels_last = False  # its data's channels are on the last axis (else on axis 1)

    def __init__(self, node: gs.Node):
        self.node = node

    @property
    def w(self) -> np.ndarray:
        return np.asarray(self.node.inputs[1].values)

    @property
    def kernel(self) -> int:
        """Columns per input channel (a convolution's kernel taps; 1 for dense layers)."""
        return 1

    def data_axis(self, rank: int) -> int:
        """The channel axis of the data input and output (rank: theirs)."""
        return rank - 1 if self.channels_last else 1

    def weight_out_axis(self) -> int:
        """The weight's axis of output channels."""
        raise NotImplementedError

    def matrix(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The weight as [inputs x kernel, outputs] (float64), the bias as the solver sees
        it (None without one)."""
        raise NotImplementedError

    def weight(self, mat: np.ndarray) -> np.ndarray:
        """``matrix()``'s layout back in the layer's own, and its dtype."""
        raise NotImplementedError

    def rows(self, x: np.ndarray) -> np.ndarray:
        """The rows [positions, inputs x kernel] its data input ``x`` gives."""
        return x.reshape(-1, x.shape[-1])

    def out_rows(self, y: np.ndarray) -> np.ndarray:
        """Its output ``y`` as [positions, outputs], in ``rows``' order."""
        return y.reshape(-1, y.shape[-1])

    def own_weights(self) -> bool:
        """Whether its weight and bias (if any) are its own: constants no other node reads."""
        w = self.node.inputs[1]
        return isinstance(w, gs.Constant) and len(w.outputs) == 1 and self.own_bias()

    def own_bias(self) -> bool:
        """Whether its bias (if any) is its own: a constant no other node reads."""
        b = input_or_none(self.node, 2)
        return b is None or (isinstance(b, gs.Constant) and len(b.outputs) == 1)


def _bias(node: gs.Node) -> np.ndarray | None:
    b = input_or_none(node, 2)
    return None if b is None else np.asarray(b.values, np.float64).reshape(-1)


class ConvLayer(Layer):
    """Weight [Cout, Cin, k...]."""

    op = "Conv"
    spatial = True

    @property
    def kernel(self) -> int:
        return int(np.prod(self.w.shape[2:]))

    def weight_out_axis(self) -> int:
        return 0

    def matrix(self):
        w = self.w.astype(np.float64)
        return w.reshape(w.shape[0], -1).T, _bias(self.node)

    def weight(self, mat):
        return np.ascontiguousarray(mat.T.reshape(self.w.shape).astype(self.w.dtype))

    def rows(self, x):
        return patch_matrix(self.node, x)

    def out_rows(self, y):
        return np.moveaxis(y, 1, -1).reshape(-1, y.shape[1])


class ConvTransposeLayer(ConvLayer):
    """Weight [Cin, Cout, k...]."""

    op = "ConvTranspose"

    def weight_out_axis(self) -> int:
        return 1

    def matrix(self):
        w = self.w.astype(np.float64)
        cin, cout = w.shape[:2]
        return w.reshape(cin, cout, self.kernel).transpose(0, 2, 1).reshape(
            cin * self.kernel, cout), _bias(self.node)

    def weight(self, mat):
        cin, cout = self.w.shape[:2]
        new = mat.reshape(cin, self.kernel, cout).transpose(0, 2, 1).reshape(self.w.shape)
        return np.ascontiguousarray(new.astype(self.w.dtype))


class GemmLayer(Layer):
    """``alpha * x B + beta * C``; B [in, out], or [out, in] with ``transB``."""

    op = "Gemm"

    def _trans(self) -> bool:
        return bool(int(self.node.attrs.get("transB", 0)))

    def weight_out_axis(self) -> int:
        return 0 if self._trans() else 1

    def matrix(self):
        w = self.w.astype(np.float64)
        alpha = float(self.node.attrs.get("alpha", 1.0))
        beta = float(self.node.attrs.get("beta", 1.0))
        bias = _bias(self.node)
        return (w.T if self._trans() else w) * alpha, None if bias is None else bias * beta

    def weight(self, mat):
        mat = mat / float(self.node.attrs.get("alpha", 1.0))
        new = mat.T if self._trans() else mat
        return np.ascontiguousarray(new.astype(self.w.dtype))


class MatMulLayer(Layer):
    """``x W``, W [in, out]; channels on the last axis; no bias of its own."""

    op = "MatMul"
    intercept = False
    channels_last = True

    def weight_out_axis(self) -> int:
        return 1

    def matrix(self):
        return self.w.astype(np.float64), None

    def weight(self, mat):
        return np.ascontiguousarray(mat.astype(self.w.dtype))


def patch_matrix(node: gs.Node, x: np.ndarray) -> np.ndarray:
    """The patch matrix [rows, Cin * k] of a Conv/ConvTranspose on input ``x``: rows in the
    output's order (sample, then positions), columns input channel-major, then the kernel
    taps. A Conv's patches are gathered from the zero-padded input (``conv_patches``), a
    ConvTranspose's taken from onnxruntime (``probe_patches``)."""
    if node.op == "Conv":
        patches = conv_patches(node, x)
        if patches is not None:
            return patches
    return probe_patches(node, x)


def conv_pads(auto: str, pads, sizes, kernel, strides, dilations
              ) -> tuple[list[int], list[int]] | None:
    """Each spatial axis's begin and end zero padding of a Conv (and of the pools): explicit
    ``pads`` or ``auto_pad`` (None: an ``auto_pad`` ONNX does not define)."""
    nd = len(sizes)
    if auto in ("NOTSET", ""):
        given = [int(p) for p in (pads or [0] * 2 * nd)]
        return given[:nd], given[nd:]
    if auto == "VALID":
        return [0] * nd, [0] * nd
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        return None
    begin, end = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else large)
        end.append(large if auto == "SAME_UPPER" else small)
    return begin, end


def conv_patches(node: gs.Node, x: np.ndarray) -> np.ndarray | None:
    """A Conv's patch matrix gathered from its zero-padded input (the values, not products:
    bit for bit what the onnxruntime probe copies, a small part of its work), or None when
    its attributes are not the plain ones this reads."""
    kernel = tuple(int(k) for k in np.asarray(node.inputs[1].values).shape[2:])
    dims = len(kernel)
    if x.ndim != dims + 2 or int(node.attrs.get("group", 1)) != 1:
        return None
    strides = list(node.attrs.get("strides", [1] * dims))
    dilations = list(node.attrs.get("dilations", [1] * dims))
    auto = node.attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    got = conv_pads(auto, node.attrs.get("pads"), x.shape[2:], kernel, strides, dilations)
    if got is None or (auto.startswith("SAME") and max(dilations) > 1):  # (onnxruntime too)
        return None
    pads = list(zip(*got, strict=True))
    if min(strides + dilations) < 1 or min(min(p) for p in pads) < 0:
        return None
    padded = np.pad(x.astype(np.float32, copy=False), [(0, 0), (0, 0), *pads])
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    if any(n < e for n, e in zip(padded.shape[2:], span, strict=True)):
        return None
    windows = np.lib.stride_tricks.sliding_window_view(padded, span, axis=tuple(
        range(2, 2 + dims)))  # [N, C, positions..., span...]
    pick = (slice(None), slice(None), *(slice(None, None, s) for s in strides),
            *(slice(None, None, d) for d in dilations))
    windows = windows[pick]  # [N, C, out..., kernel...]
    n, c = x.shape[:2]
    out = windows.shape[2:2 + dims]
    # rows (sample, positions), columns (channel, taps)
    order = (0, *range(2, 2 + dims), 1, *range(2 + dims, 2 + 2 * dims))
    return np.ascontiguousarray(windows.transpose(order)).reshape(
        n * int(np.prod(out)), c * int(np.prod(kernel)))


def probe_patches(node: gs.Node, x: np.ndarray) -> np.ndarray:
    """The patch matrix taken from onnxruntime itself: a probe with the layer's attributes
    whose one-hot weights copy every (input channel, kernel position) to an output channel."""
    w = np.asarray(node.inputs[1].values)
    cin = x.shape[1]
    kernel = w.shape[2:]
    k = int(np.prod(kernel))
    eye = np.zeros((cin * k, cin, *kernel), np.float32)
    for c in range(cin):
        eye[c * k:(c + 1) * k, c] = np.eye(k, dtype=np.float32).reshape(k, *kernel)
    if node.op == "ConvTranspose":
        eye = eye.transpose(1, 0, *range(2, eye.ndim)).copy()  # [Cin, Cin*k, ...]
    attrs = {a: v for a, v in node.attrs.items() if a != "group"}
    probe = helper.make_node(node.op, ["x", "w"], ["y"], **attrs)
    graph = helper.make_graph([probe], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(eye, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    y = session(model).run(None, {"x": x.astype(np.float32)})[0]
    return np.moveaxis(y, 1, -1).reshape(-1, cin * k)
