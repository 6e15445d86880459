"""Models whose large weights live apart, as arrays: one copy of the weights per process.

A ``Skeleton`` is an ONNX model whose large initializers are declared as external data and
whose values are numpy arrays beside it. The input model becomes one when it is loaded
(``io.load_skeleton``: the weights memory-mapped where they lie in the file or its external
data, or copied out of the parsed protobuf once); the graph onnx-graphsurgeon imports reads
those same arrays, and so do the pruning's reference, the onnxruntime sessions that check the
result (``runtime.session`` feeds them where they lie) and the normalization's comparison.
Only the written model is serialized whole. The arrays are read-only: nothing may edit weights
that several graphs share (removal and folding assign new arrays).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

NP_TYPES = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32, onnx.TensorProto.INT16: np.int16,
    onnx.TensorProto.INT8: np.int8, onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.UINT16: np.uint16, onnx.TensorProto.BOOL: np.bool_,
}
_ONNX_TYPES = {np.dtype(v): k for k, v in NP_TYPES.items()}

EXTERNAL_BYTES = 1 << 16  # initializers this large live apart (smaller ones: shape data, biases)
LOCATION = "onnxprune-memory"  # the external-data location of weights held as arrays


@dataclass
class Skeleton:
    """``model`` with its large initializers declared external; their values in ``arrays``."""

    model: onnx.ModelProto
    arrays: dict[str, np.ndarray]


def proto(model: onnx.ModelProto | Skeleton) -> onnx.ModelProto:
    """The ModelProto (a skeleton's declares its large weights and holds none)."""
    return model.model if isinstance(model, Skeleton) else model


def _declare(t: onnx.TensorProto, nbytes: int) -> None:
    t.data_location = onnx.TensorProto.EXTERNAL
    del t.external_data[:]
    for key, value in (("location", LOCATION), ("offset", "0"), ("length", str(nbytes))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value


def large_initializer(t: onnx.TensorProto) -> bool:
    if t.data_type not in NP_TYPES or t.data_location == onnx.TensorProto.EXTERNAL:
        return False
    count = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
    return count * np.dtype(NP_TYPES[t.data_type]).itemsize >= EXTERNAL_BYTES


def to_skeleton(model: onnx.ModelProto, base_dir: str | None = None,
                given: dict[str, np.ndarray] | None = None) -> Skeleton:
    """A new skeleton of ``model`` (which is left as it is): its large top-level initializers
    become arrays, copied out of the protobuf once. With ``base_dir`` (the model was loaded
    without its external data), externally stored ones are memory-mapped from their files
    (read-only, no copy) and the other tensors that are stored outside (in subgraphs,
    attributes) are read into the new proto; without it, they stay declared as they are.
    ``given``: values of initializers whose bytes the proto does not hold (``ir.mapped``)."""
    given = given or {}
    arrays: dict[str, np.ndarray] = {}
    out = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version",
                  "doc_string"):
        if model.HasField(field):  # (proto2: a field set to its default is still written)
            setattr(out, field, getattr(model, field))
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    out.metadata_props.extend(model.metadata_props)
    g, src = out.graph, model.graph
    for field in ("name", "doc_string"):
        if src.HasField(field):
            setattr(g, field, getattr(src, field))
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    g.sparse_initializer.extend(src.sparse_initializer)
    for init in src.initializer:
        external = init.data_location == onnx.TensorProto.EXTERNAL
        if init.name in given:
            arrays[init.name] = given[init.name]
        elif external and base_dir is not None and init.data_type in NP_TYPES:
            arrays[init.name] = _mapped(init, base_dir)
        elif large_initializer(init):  # (sized by its dims: reading raw_data copies it)
            a = (np.frombuffer(init.raw_data, NP_TYPES[init.data_type]).reshape(
                tuple(init.dims)) if init.HasField("raw_data") else numpy_helper.to_array(init))
            a.flags.writeable = False
            arrays[init.name] = a
        else:
            g.initializer.append(init)
            continue
        t = g.initializer.add()
        t.name, t.data_type = init.name, init.data_type
        t.dims.extend(init.dims)
        _declare(t, arrays[init.name].nbytes)
    if base_dir is not None:
        from onnx.external_data_helper import _get_all_tensors, load_external_data_for_tensor

        for t in _get_all_tensors(out):
            if t.data_location == onnx.TensorProto.EXTERNAL and t.name not in arrays:
                load_external_data_for_tensor(t, base_dir)
    return Skeleton(out, arrays)


def _mapped(init: onnx.TensorProto, base_dir: str) -> np.ndarray:
    """An external initializer's values, memory-mapped read-only from its file (onnx's own
    checks of the location: no path outside the model's folder)."""
    from onnx.external_data_helper import ExternalDataInfo, _open_external_data_fd

    info = ExternalDataInfo(init)
    dtype = np.dtype(NP_TYPES[init.data_type])
    shape = tuple(int(d) for d in init.dims)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    offset = info.offset or 0
    fd = _open_external_data_fd(base_dir, info.location, init.name, True)
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if info.length is not None and info.length != nbytes or offset + nbytes > size:
            raise ValueError(f"external data of {init.name} holds {size - offset} bytes from "
                             f"offset {offset}, its shape needs {nbytes}")
        if nbytes == 0:
            return np.zeros(shape, dtype)
        if offset % dtype.itemsize:  # unaligned for its type: read a copy
            fh.seek(offset)
            a = np.frombuffer(fh.read(nbytes), dtype).reshape(shape)
        else:
            a = np.asarray(np.memmap(fh, dtype=dtype, mode="r", offset=offset, shape=shape))
    return a


def embed(skeleton: Skeleton) -> onnx.ModelProto:
    """A standalone copy of the model with the arrays' bytes back in its initializers."""
    model = onnx.ModelProto()
    model.CopyFrom(skeleton.model)
    for t in model.graph.initializer:
        a = skeleton.arrays.get(t.name)
        if a is not None and t.data_location == onnx.TensorProto.EXTERNAL:
            del t.external_data[:]
            t.ClearField("data_location")
            t.raw_data = np.ascontiguousarray(a).tobytes()
    return model


def import_skeleton(skeleton: Skeleton) -> gs.Graph:
    """The graph of a skeleton; its large constants hold the skeleton's arrays (shared)."""
    graph = gs.import_onnx(skeleton.model)
    for name, tensor in _tensors(graph):
        a = skeleton.arrays.get(name)
        if a is not None and isinstance(tensor, gs.Constant):
            tensor.values = a
            tensor.data_location = None  # exported with its bytes (the arrays are in memory)
    return graph


def _tensors(graph: gs.Graph):
    """(name, tensor) of the graph and of the subgraphs of its nodes (which may read the outer
    graph's initializers)."""
    yield from graph.tensors().items()
    for node in graph.nodes:
        for value in node.attrs.values():
            for sub in value if isinstance(value, list) else [value]:
                if isinstance(sub, gs.Graph):
                    yield from _tensors(sub)


def _values_view(tensor: gs.Constant) -> np.ndarray | None:
    """A constant's values without loading lazy ones that are small or of types numpy lacks."""
    values = tensor._values  # noqa: SLF001 - LazyValues: read the proto only when worth it
    if isinstance(values, np.ndarray):
        return values
    t = getattr(values, "tensor", None)
    if not isinstance(t, onnx.TensorProto) or not large_initializer(t):
        return None
    return tensor.values


def lift_constants(graph: gs.Graph, pick) -> gs.Graph:
    """A copy of ``graph`` (nodes and tensors copied, weights shared) in which every constant
    ``pick(constant)`` accepts (not a graph output) is a graph input of its type and shape."""
    bare = graph.copy()
    outputs = {id(t) for t in bare.outputs}
    for name, tensor in list(bare.tensors().items()):
        if not isinstance(tensor, gs.Constant) or id(tensor) in outputs or not pick(tensor):
            continue
        typed = gs.Variable(name, dtype=tensor.dtype, shape=list(tensor.shape))
        for node in list(tensor.outputs):
            for i, t in enumerate(node.inputs):
                if t is tensor:  # (one slot at a time: gs keeps the links in step)
                    node.inputs[i] = typed
        bare.inputs.append(typed)
    return bare


def graph_skeleton(graph: gs.Graph, export) -> Skeleton:
    """``graph`` exported by ``export`` (a function of a gs graph, e.g. ``ir.graph.export_model``
    with its options bound) without serializing its large constants: they are declared external
    and their arrays are the graph's own (no copy)."""
    arrays: dict[str, np.ndarray] = {}

    def large(tensor: gs.Constant) -> bool:
        a = _values_view(tensor)
        if a is None or a.dtype not in _ONNX_TYPES or a.nbytes < EXTERNAL_BYTES:
            return False
        arrays[tensor.name] = np.ascontiguousarray(a)
        return True

    model = export(lift_constants(graph, large))
    declared = [i for i in model.graph.input if i.name in arrays]
    kept = [i for i in model.graph.input if i.name not in arrays]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    for vi in declared:
        a = arrays[vi.name]
        t = model.graph.initializer.add()
        t.name, t.data_type = vi.name, _ONNX_TYPES[a.dtype]
        t.dims.extend(a.shape)
        _declare(t, a.nbytes)
    return Skeleton(model, arrays)
