"""Counting work and size from the graph: MACs of Conv/ConvTranspose/Gemm/MatMul, parameters.

MACs are per sample: symbolic (batch) dimensions count as 1. Elementwise ops, pooling and
normalizations are not counted (the usual convention of MAC counters).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import prod, shape_of


def _static(dims) -> list[int] | None:
    if dims is None:
        return None
    return [d if isinstance(d, int) else 1 for d in dims] if None not in dims else None


def weight_shape(tensor: gs.Tensor) -> tuple[int, ...] | None:
    """The shape of a constant weight, also behind a DequantizeLinear (quantized graphs)."""
    if isinstance(tensor, gs.Constant):
        return tuple(tensor.values.shape)
    producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
    if producer is not None and producer.op == "DequantizeLinear" and isinstance(
            producer.inputs[0], gs.Constant):
        return tuple(producer.inputs[0].values.shape)
    return None


def node_macs(node: gs.Node) -> int:
    op = node.op
    w = weight_shape(node.inputs[1]) if op in ("Conv", "ConvTranspose") else None
    if w is not None:
        if op == "Conv":
            y = _static(shape_of(node.outputs[0]))
            return 0 if y is None else prod(y) * w[1] * prod(w[2:])
        x = _static(shape_of(node.inputs[0]))
        return 0 if x is None else prod(x) * w[1] * prod(w[2:])
    if op == "Gemm":
        y = _static(shape_of(node.outputs[0]))
        a = _static(shape_of(node.inputs[0]))
        if y is None or a is None:
            return 0
        k = a[0] if int(node.attrs.get("transA", 0)) else a[1]
        return prod(y) * k
    if op == "MatMul":
        y = _static(shape_of(node.outputs[0]))
        a = _static(shape_of(node.inputs[0]))
        if y is None or not a:
            return 0
        return prod(y) * a[-1]
    return 0


def graph_macs(graph: gs.Graph) -> int:
    return sum(node_macs(n) for n in graph.nodes)


QUANT_CONSUMERS = ("DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                   "MatMulInteger", "QGemm", "QLinearAdd", "QLinearMul")


def is_param(tensor: gs.Tensor) -> bool:
    """Weights, biases and per-channel scales: floating-point constants of any precision,
    8/4-bit integer constants (quantized weights and their zero points) and the 32-bit
    integer biases of quantized layers. Shape and index constants are not parameters."""
    if not isinstance(tensor, gs.Constant):
        return False
    dtype = np.dtype(tensor.values.dtype) if hasattr(tensor.values, "dtype") else None
    if dtype is None:
        return False
    if dtype.kind == "f" or (dtype.kind == "V" and dtype.itemsize == 2):  # bfloat16 as void
        return True
    if dtype.kind in "iu" and dtype.itemsize == 1:
        return True
    return dtype == np.int32 and any(n.op in QUANT_CONSUMERS for n in tensor.outputs)


def _unique_params(graph: gs.Graph) -> dict[str, gs.Constant]:
    seen: dict[str, gs.Constant] = {}
    for node in graph.nodes:
        for t in node.inputs:
            if t.name not in seen and is_param(t):
                seen[t.name] = t
    return seen


def graph_params(graph: gs.Graph) -> int:
    """Elements of the parameter constants the nodes use (each initializer once)."""
    return sum(int(np.prod(t.shape)) for t in _unique_params(graph).values())


def params_by_type(graph: gs.Graph) -> dict[str, int]:
    """Parameter elements per element type ("float32", "int8", ...), largest first."""
    out: dict[str, int] = {}
    for t in _unique_params(graph).values():
        name = str(np.dtype(t.values.dtype))
        out[name] = out.get(name, 0) + int(np.prod(t.shape))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
