"""Counting work and size from the graph: MACs (each op rule counts its own) and parameters.

MACs are per sample: symbolic (batch) dimensions count as 1. Elementwise ops, pooling and
normalizations are not counted (the usual convention of MAC counters).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import infer_shapes
from ..rules import default_registry

_REGISTRY = []


def node_macs(node: gs.Node) -> int:
    """Multiply-accumulates of one node per sample, as its op rule counts them."""
    if not _REGISTRY:
        _REGISTRY.append(default_registry())
    return _REGISTRY[0].lookup(node.op, node.domain or "").macs(node)


def macs_at(graph: gs.Graph, shapes: dict[str, list[int]] | None) -> int:
    """Per-sample MACs with the inputs at ``shapes`` (batch 1): symbolic spatial or sequence
    sizes counted at the sizes the model actually runs at, not as 1."""
    if not shapes or not any(not isinstance(d, int) or d <= 0
                             for t in graph.inputs for d in (t.shape or [])[1:]):
        return graph_macs(graph)
    copy = graph.copy()
    inputs = {id(t) for t in copy.inputs}
    for t in copy.tensors().values():
        if isinstance(t, gs.Variable) and id(t) not in inputs:
            t.shape = None  # inferred again from the inputs (old symbolic shapes would clash)
    for t in copy.inputs:
        if t.name in shapes:
            t.shape = [1, *shapes[t.name][1:]] if shapes[t.name] else []
    return graph_macs(infer_shapes(copy))


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


def _unique_params(graph: gs.Graph, seen: dict[str, gs.Constant] | None = None
                   ) -> dict[str, gs.Constant]:
    """Each parameter constant once, by name, those used inside If/Loop/Scan bodies too."""
    seen = {} if seen is None else seen
    for node in graph.nodes:
        for t in node.inputs:
            if t.name not in seen and is_param(t):
                seen[t.name] = t
        for value in node.attrs.values():
            for sub in value if isinstance(value, list) else [value]:
                if isinstance(sub, gs.Graph):
                    _unique_params(sub, seen)
    return seen


def graph_params(graph: gs.Graph) -> int:
    """Elements of the parameter constants the nodes use (each initializer once)."""
    return sum(int(np.prod(t.shape)) for t in _unique_params(graph).values())


def subgraph_params(graph: gs.Graph) -> int:
    """Parameters only If/Loop/Scan bodies use (the analysis does not reach inside them)."""
    top: dict[str, gs.Constant] = {}
    for node in graph.nodes:
        for t in node.inputs:
            if is_param(t):
                top[t.name] = t
    return sum(int(np.prod(t.shape)) for name, t in _unique_params(graph).items()
               if name not in top)


def params_by_type(graph: gs.Graph) -> dict[str, int]:
    """Parameter elements per element type ("float32", "int8", ...), largest first."""
    out: dict[str, int] = {}
    for t in _unique_params(graph).values():
        name = str(np.dtype(t.values.dtype))
        out[name] = out.get(name, 0) + int(np.prod(t.shape))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
