"""Counting work and size from the graph: MACs of Conv/ConvTranspose/Gemm/MatMul, parameters.

MACs are per sample: symbolic (batch) dimensions count as 1. Elementwise ops, pooling and
normalizations are not counted (the usual convention of MAC counters).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .graph import prod, shape_of


def _static(dims) -> list[int] | None:
    if dims is None:
        return None
    return [d if isinstance(d, int) else 1 for d in dims] if None not in dims else None


def node_macs(node: gs.Node) -> int:
    op = node.op
    if op in ("Conv", "ConvTranspose") and isinstance(node.inputs[1], gs.Constant):
        w = node.inputs[1].values.shape
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


def is_param(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Constant) and np.issubdtype(tensor.values.dtype, np.floating)


def graph_params(graph: gs.Graph) -> int:
    """Elements of floating-point constants the nodes use (weights, biases, per-channel scales)."""
    seen: dict[str, int] = {}
    for node in graph.nodes:
        for t in node.inputs:
            if is_param(t) and t.name not in seen:
                seen[t.name] = int(np.prod(t.values.shape))
    return sum(seen.values())
