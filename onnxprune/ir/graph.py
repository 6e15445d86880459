"""Helpers on the onnx-graphsurgeon IR. The one module that owns graph mutation helpers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.logger import G_LOGGER

from .scopes import shared_constants
from .symbolic import refine_shapes
from .weights import Skeleton, graph_skeleton, import_skeleton, lift_constants, proto

# onnx-graphsurgeon prints its warnings to stdout (which must stay one JSON object with
# --json); what they say (foldable large tensors, types it cannot map) is handled here.
G_LOGGER.severity = G_LOGGER.ERROR

Dim = int | str | None


def import_model(model: onnx.ModelProto | Skeleton) -> gs.Graph:
    """The graph of a model; a skeleton's large constants hold its arrays (shared, read-only)."""
    if isinstance(model, Skeleton):
        return import_skeleton(model)
    return gs.import_onnx(model)


def export_model(graph: gs.Graph, ir_version: int | None = None,
                 like: onnx.ModelProto | Skeleton | None = None) -> onnx.ModelProto:
    """The graph as a model; ``like``: the model it came from, whose model-level fields the IR
    does not carry (metadata, doc string, producer, version, domain, local functions, graph
    output types) are kept."""
    with shared_constants(graph):  # a weight branches share: one initializer
        model = gs.export_onnx(graph, do_type_check=False)
    if ir_version is not None:
        model.ir_version = ir_version
    if like is not None:
        carry_model_fields(model, proto(like))
    return model


def export_skeleton(graph: gs.Graph, ir_version: int | None = None,
                    like: onnx.ModelProto | Skeleton | None = None) -> Skeleton:
    """``export_model`` whose large weights stay the graph's arrays (declared external in the
    proto): what sessions and checks need, without serializing or copying the weights."""
    return graph_skeleton(graph, lambda g: export_model(g, ir_version, like))


def carry_model_fields(model: onnx.ModelProto, source: onnx.ModelProto) -> None:
    """Copy onto ``model`` what onnx-graphsurgeon drops from ``source``: ``metadata_props`` (a
    package may keep its label map there), ``doc_string``, ``producer_*``, ``model_version``,
    ``domain``, local functions still called, and the types of graph outputs that lost them in
    the round trip (a shapeless ``value_info`` shadowing an output's shape; sequence and map
    outputs, which the IR does not represent)."""
    del model.metadata_props[:]
    model.metadata_props.extend(source.metadata_props)
    model.doc_string = source.doc_string
    model.producer_name, model.producer_version = source.producer_name, source.producer_version
    model.model_version, model.domain = source.model_version, source.domain
    called = {(n.domain, n.op_type) for n in model.graph.node}
    have = {(f.domain, f.name) for f in model.functions}
    model.functions.extend(f for f in source.functions
                           if (f.domain, f.name) in called and (f.domain, f.name) not in have)
    outputs = {o.name: o for o in source.graph.output}
    for out in model.graph.output:
        src = outputs.get(out.name)
        if src is not None and _lost_type(out.type, src.type):
            out.type.CopyFrom(src.type)


def _lost_type(got: onnx.TypeProto, want: onnx.TypeProto) -> bool:
    """The round trip lost the type: another kind (sequence/map as a tensor), no element type,
    or no shape where the source has one of the same rank semantics."""
    if got.WhichOneof("value") != want.WhichOneof("value"):
        return True
    if want.HasField("tensor_type"):
        g, w = got.tensor_type, want.tensor_type
        return not g.elem_type or (w.HasField("shape") and not g.HasField("shape"))
    return got != want  # sequences and maps: the IR keeps no element types


def infer_shapes(graph: gs.Graph, symbolic: bool = False) -> gs.Graph:
    """Annotate every variable with ONNX shape inference (with data propagation), in place;
    ``symbolic``: then fill what it left open with onnxruntime's symbolic inference (seconds
    on large graphs: the analysis asks for it only when a shape froze channels).

    Inference runs on a weight-free skeleton (large constants become typed inputs), so the
    weights are never serialized; the inferred types and shapes are copied back by name.
    """
    skeleton = lift_constants(graph, lambda c: int(np.prod(c.shape)) > SMALL_CONSTANT)
    model = gs.export_onnx(skeleton, do_type_check=False)
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # inference is best effort; the analysis freezes what it cannot see
        return graph
    known = {vi.name: vi for vi in list(model.graph.value_info) + list(model.graph.output)}
    for name, tensor in graph.tensors().items():
        vi = known.get(name)
        if vi is None or not isinstance(tensor, gs.Variable) or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        if tt.elem_type:
            tensor.dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if tt.HasField("shape"):
            tensor.shape = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tt.shape.dim
            ]
    if symbolic:
        refine_shapes(graph, model)
    return graph


# Constants up to this many elements stay in the skeleton (shape data for data propagation).
SMALL_CONSTANT = 64


def const_value(tensor: gs.Tensor | None) -> np.ndarray | None:
    """The value of a constant tensor (initializer or Constant node output), else None."""
    if tensor is None:
        return None
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        node = tensor.inputs[0]
        if "value" in node.attrs:
            value = node.attrs["value"]
            return np.asarray(value.values if isinstance(value, gs.Constant) else value)
        for key in ("value_float", "value_int"):
            if key in node.attrs:
                return np.asarray(node.attrs[key])
        for key in ("value_floats", "value_ints"):
            if key in node.attrs:
                return np.asarray(list(node.attrs[key]))
    return None


def is_initializer(tensor: gs.Tensor | None) -> bool:
    return isinstance(tensor, gs.Constant)


def shape_of(tensor: gs.Tensor) -> list[Dim] | None:
    """Shape with ints for static dims, strings for symbolic ones, None for unknown."""
    if isinstance(tensor, gs.Constant):
        return list(tensor.values.shape) if hasattr(tensor.values, "shape") else None
    if tensor.shape is None:
        return None
    dims: list[Dim] = []
    for d in tensor.shape:
        if isinstance(d, (int, np.integer)) and d >= 0:
            dims.append(int(d))
        elif isinstance(d, str) and d:
            dims.append(d)
        else:
            dims.append(None)
    return dims


def input_or_none(node: gs.Node, index: int) -> gs.Tensor | None:
    """The node's i-th input, or None if absent or the empty (optional) name."""
    if index >= len(node.inputs):
        return None
    t = node.inputs[index]
    if t is None or (isinstance(t, gs.Variable) and t.is_empty()):
        return None
    return t


def consumers(tensor: gs.Tensor) -> list[gs.Node]:
    return list(tensor.outputs)


def producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def replace_input(node: gs.Node, old: gs.Tensor, new: gs.Tensor) -> None:
    for i, t in enumerate(node.inputs):
        if t is old:
            node.inputs[i] = new


def replace_all_uses(graph: gs.Graph, old: gs.Tensor, new: gs.Tensor) -> None:
    """Point every consumer (and graph output slot) of ``old`` at ``new``."""
    for node in list(old.outputs):
        replace_input(node, old, new)
    graph.outputs = [new if t is old else t for t in graph.outputs]


def detach(node: gs.Node) -> None:
    """Disconnect a node; ``graph.cleanup()`` then removes it."""
    node.inputs.clear()
    node.outputs.clear()


def bypass(graph: gs.Graph, node: gs.Node, replacement: gs.Tensor) -> None:
    """Let every reader of ``node``'s first output read ``replacement``, and drop the node."""
    replace_all_uses(graph, node.outputs[0], replacement)
    detach(node)


def new_constant(graph: gs.Graph, hint: str, values: np.ndarray) -> gs.Constant:
    name = unique_name(graph, hint)
    return gs.Constant(name, np.require(values, requirements="C"))  # keeps 0-d arrays 0-d


def unique_name(graph: gs.Graph, hint: str) -> str:
    existing = graph.tensors().keys() | {n.name for n in graph.nodes}
    if hint not in existing:
        return hint
    i = 1
    while f"{hint}_{i}" in existing:
        i += 1
    return f"{hint}_{i}"


def graph_io_names(graph: gs.Graph) -> tuple[set[str], set[str]]:
    return {t.name for t in graph.inputs}, {t.name for t in graph.outputs}


def subgraph_references(graph: gs.Graph) -> set[str]:
    """Names of outer-scope tensors referenced from inside control-flow subgraphs."""
    refs: set[str] = set()
    for node in graph.nodes:
        for sub in node.subgraphs():
            local = {t for t in sub.tensors()}
            produced = {o.name for n in sub.nodes for o in n.outputs}
            inner_inputs = {t.name for t in sub.inputs}
            for name in local:
                if name not in produced and name not in inner_inputs:
                    refs.add(name)
            refs |= subgraph_references(sub)
    return refs


def normalize_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def prod(dims: Sequence[int]) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


def static_dims(dims) -> list[int] | None:
    """Dimensions with symbolic ones as 1 (per-sample counts); None when any is unknown."""
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


def adopt(branch: gs.Graph, prefix: str) -> list[gs.Node]:
    """The branch's nodes, their names and local tensors' names prefixed (with the If's name,
    so they stay unique in the outer graph); a constant something outside the branch reads too
    (a weight the other branch shares) keeps its name."""
    mine = {id(n) for n in _all_nodes(branch)}
    for tensor in branch._local_tensors().values():  # noqa: SLF001 - graphsurgeon's own helper
        if tensor.name and not (isinstance(tensor, gs.Constant)
                                and any(id(r) not in mine for r in tensor.outputs)):
            tensor.name = f"{prefix}/{tensor.name}"
    for n in branch.nodes:
        n.name = f"{prefix}/{n.name}" if n.name else f"{prefix}/{n.op}"
    return list(branch.nodes)


def _all_nodes(graph: gs.Graph):
    for node in graph.nodes:
        yield node
        for sub in node.subgraphs():
            yield from _all_nodes(sub)
