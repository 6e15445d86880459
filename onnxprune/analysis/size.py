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


def node_costs(graph: gs.Graph) -> dict[str, int]:
    """Each node's MACs per sample, by node name: where a search's kept points go."""
    return {n.name: node_macs(n) for n in graph.nodes}


def macs_at(graph: gs.Graph, shapes: dict[str, list[int]] | None) -> int:
    """Per-sample MACs with the inputs at ``shapes`` (batch 1): symbolic spatial or sequence
    sizes counted at the sizes the model actually runs at, not as 1."""
    if not shapes or not any(not isinstance(d, int) or d <= 0
                             for t in graph.inputs for d in (t.shape or [])[1:]):
        return graph_macs(graph)
    return graph_macs(shaped(graph, {k: [1, *v[1:]] if v else [] for k, v in shapes.items()}))


def shaped(graph: gs.Graph, shapes: dict[str, list[int]]) -> gs.Graph:
    """A copy of ``graph`` (sharing its weights) with the inputs at ``shapes`` and every other
    shape inferred again from them."""
    copy = graph.copy()
    inputs = {id(t) for t in copy.inputs}
    for t in copy.tensors().values():
        if isinstance(t, gs.Variable) and id(t) not in inputs:
            t.shape = None  # inferred again from the inputs (old symbolic shapes would clash)
    for t in copy.inputs:
        if t.name in shapes:
            t.shape = list(shapes[t.name])
    return infer_shapes(copy)


def graph_macs(graph: gs.Graph) -> int:
    return sum(node_macs(n) for n in graph.nodes)


QUANT_CONSUMERS = ("DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                   "MatMulInteger", "QGemm", "QLinearAdd", "QLinearMul")


def param_dtype(tensor: gs.Tensor) -> np.dtype | None:
    """The element type of a constant, None for a variable (or a constant without one)."""
    if not isinstance(tensor, gs.Constant):
        return None
    values = tensor.values
    return np.dtype(values.dtype) if hasattr(values, "dtype") else None


def type_name(dtype: np.dtype) -> str:
    """The element type as counts are keyed: numpy's names, ONNX's for the low-precision types
    ml_dtypes carries (bfloat16, int4, uint4, float8_e4m3fn, ...)."""
    return np.dtype(dtype).name


def is_param(tensor: gs.Tensor) -> bool:
    """Weights, biases and per-channel scales: floating-point constants of any precision
    (float32, float16, bfloat16, float8), 8/4-bit integer constants (quantized weights and
    their zero points) and the 32-bit integer biases of quantized layers. Shape and index
    constants are not parameters."""
    dtype = param_dtype(tensor)
    if dtype is None:
        return False
    if dtype.kind == "f":
        return True
    if dtype.kind == "V":  # ml_dtypes' numeric types: bfloat16, int4, uint4, float8_*
        return dtype.itemsize <= 2 and dtype.fields is None
    if dtype.kind in "iu" and dtype.itemsize == 1:
        return True
    return dtype == np.int32 and any(n.op in QUANT_CONSUMERS for n in tensor.outputs)


def unique_params(graph: gs.Graph, seen: dict[int, gs.Constant] | None = None
                   ) -> dict[int, gs.Constant]:
    """Each parameter constant once, those used inside If/Loop/Scan bodies too, and the values
    of Constant nodes (exporters that store weights that way, before folding). Once by array,
    not by name (two branches may each hold an initializer of one name) nor by tensor (a
    graph's copy copies the tensors a body reads, not their arrays)."""
    seen = {} if seen is None else seen
    for node in graph.nodes:
        for t in node.inputs:
            if is_param(t):
                seen.setdefault(id(t._values), t)  # noqa: SLF001 - the array (or lazy proto)
        value = node.attrs.get("value") if node.op == "Constant" else None
        if isinstance(value, gs.Constant) and node.outputs and is_param(value):
            seen.setdefault(id(value._values), value)  # noqa: SLF001 - weights as Constant nodes
        for value in node.attrs.values():
            for sub in value if isinstance(value, list) else [value]:
                if isinstance(sub, gs.Graph):
                    unique_params(sub, seen)
    return seen


def graph_params(graph: gs.Graph) -> int:
    """Elements of the parameter constants the nodes use (each initializer once)."""
    return sum(int(np.prod(t.shape)) for t in unique_params(graph).values())


def subgraph_params(graph: gs.Graph) -> int:
    """Parameters only If/Loop/Scan bodies use (the analysis does not reach inside them)."""
    top = {id(t._values) for node in graph.nodes for t in node.inputs  # noqa: SLF001
           if is_param(t)}
    return sum(int(np.prod(t.shape)) for key, t in unique_params(graph).items()
               if key not in top)


def params_by_type(graph: gs.Graph) -> dict[str, int]:
    """Parameter elements per element type ("float32", "int8", "int4", "bfloat16", ...), each
    initializer once, largest first; they sum to ``graph_params``."""
    out: dict[str, int] = {}
    for t in unique_params(graph).values():
        name = type_name(param_dtype(t))
        out[name] = out.get(name, 0) + int(np.prod(t.shape))
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


# bits per element of the types parameters come in (packed 4-bit types: 4)
_BITS = {"int4": 4, "uint4": 4, "float4_e2m1fn": 4}


def param_bytes(by_type: dict[str, int]) -> int:
    """Bytes the parameters of ``params_by_type`` take as stored (4-bit types packed)."""
    total = 0
    for name, count in by_type.items():
        bits = _BITS.get(name, 8 * np.dtype(name).itemsize if name in np.sctypeDict
                         else 8 * _ml_dtype(name).itemsize)
        total += (count * bits + 7) // 8
    return total


def _ml_dtype(name: str) -> np.dtype:
    import ml_dtypes

    return np.dtype(getattr(ml_dtypes, name))


def types_text(by_type: dict[str, int]) -> str:
    """``int8 42,000, float32 1,210`` (largest first)."""
    return ", ".join(f"{name} {count:,}" for name, count in by_type.items())
