"""Quantized (QDQ) weights in the IR: a constant integer tensor read through a
DequantizeLinear, with a per-tensor scale or one scale (and zero point) per channel of one axis.

Op rules treat such a weight like a float constant: its channels are the integer tensor's
(sliced, never re-quantized), and slicing the axis the scales run along slices the scales and
zero points with it. Blocked quantization (opset 21 ``block_size``) is not sliced.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def dequantized_weight(tensor: gs.Tensor | None) -> tuple[gs.Node, gs.Constant] | None:
    """(the DequantizeLinear, its integer constant) when ``tensor`` is a quantized weight: the
    output of a DequantizeLinear whose data, scale and zero point are all constants."""
    if not isinstance(tensor, gs.Variable) or len(tensor.inputs) != 1:
        return None
    node = tensor.inputs[0]
    if node.op != "DequantizeLinear" or (node.domain or "") not in ("", "ai.onnx"):
        return None
    if not all(isinstance(t, gs.Constant) for t in node.inputs if t is not None and t.name):
        return None
    return node, node.inputs[0]


def is_weight(tensor: gs.Tensor | None) -> bool:
    """A float constant, or a quantized weight (``dequantized_weight``)."""
    return isinstance(tensor, gs.Constant) or dequantized_weight(tensor) is not None


def quant_axis(node: gs.Node, rank: int) -> int:
    """The axis a (De)QuantizeLinear's scales run along (attribute ``axis``, default 1)."""
    axis = int(node.attrs.get("axis", 1))
    return axis + rank if axis < 0 else axis


def _scale_inputs(node: gs.Node) -> list[gs.Tensor]:
    return [t for t in node.inputs[1:3] if t is not None and t.name]


def per_channel_params(node: gs.Node, axis: int, rank: int, size: int
                       ) -> list[gs.Tensor] | None:
    """What slicing axis ``axis`` (of ``size`` channels) of a (De)QuantizeLinear's data slices
    with it: its scale and zero point when they run along that axis, nothing when they are
    per tensor or run along another axis; None when they cannot be sliced (blocked)."""
    if int(node.attrs.get("block_size", 0) or 0):
        return None
    scale = node.inputs[1]
    shape = tuple(scale.shape) if scale.shape is not None else None
    if shape is None:
        return None
    if len(shape) == 0 or int(np.prod(shape)) == 1:
        return []  # per tensor: the same scale for every channel
    if len(shape) != 1 or quant_axis(node, rank) != axis:
        return [] if len(shape) == 1 else None
    if shape[0] != size:
        return None
    return _scale_inputs(node)


def dequantize(node: gs.Node) -> np.ndarray:
    """The float values of a quantized constant weight: (q - zero point) x scale."""
    data = np.asarray(node.inputs[0].values)
    scale = np.asarray(node.inputs[1].values, dtype=np.float32)
    zp = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    zero = np.asarray(zp.values).astype(np.float32) if zp is not None else np.float32(0)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * data.ndim
        shape[quant_axis(node, data.ndim)] = scale.size
        scale = scale.reshape(shape)
        zero = np.reshape(zero, shape) if np.ndim(zero) == 1 else zero
    return (data.astype(np.float32) - zero) * scale


def param_values(tensor: gs.Constant) -> np.ndarray:
    """A parameter constant's values as floats: de-quantized when it is the integer data of a
    quantized weight (its magnitude is what importance scores compare)."""
    for user in tensor.outputs:
        if user.op == "DequantizeLinear" and user.inputs[0] is tensor and dequantized_weight(
                user.outputs[0]) is not None:
            return dequantize(user)
    return np.asarray(tensor.values, dtype=np.float32)


def is_quantized(graph: gs.Graph) -> bool:
    """Whether the graph holds quantized weights (QDQ) or integer kernels (QOperator)."""
    return any(n.op in QDQ_OPS or n.op in QOPERATOR for n in graph.nodes)


# Integer kernels with their scales inside the op (onnxruntime's QOperator format).
QOPERATOR = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")
