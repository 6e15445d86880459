"""Writing a skeleton (``ir.weights``) without assembling the whole model in memory.

A ModelProto with its weights inline is the protobuf encoding of its fields in any order
(parsers merge them): the model's own fields, then the graph as one length-delimited field
whose payload is the graph without its initializers followed by each of them, in order, as an
``initializer`` entry (a large one encoded here around its array's own buffer). The bytes parse to the model
``weights.embed`` would build; no serialized copy of the weights is ever held. With external
data, the arrays go to the data file one after another (page-aligned, as onnx writes them) and
the small proto names where each one lies.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import onnx

from .mapped import GRAPH_INITIALIZER, MODEL_GRAPH, TENSOR_RAW_DATA, field_key
from .weights import Skeleton, embed

ALIGN = 4096  # external data offsets, as onnx's writer aligns large tensors


def _streamed(skeleton: Skeleton) -> list[onnx.TensorProto]:
    return [t for t in skeleton.model.graph.initializer
            if t.name in skeleton.arrays and t.data_location == onnx.TensorProto.EXTERNAL]


def _buffer(a: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(a)).cast("B")


def _pieces(skeleton: Skeleton) -> Iterator[bytes | memoryview]:
    """The encoding in pieces: the model's fields, the graph's key, the graph without its
    initializers, then every initializer in its order (the large ones around their arrays)."""
    model = onnx.ModelProto()
    model.CopyFrom(skeleton.model)
    streamed = {t.name for t in _streamed(skeleton)}
    entries: list[list[bytes | memoryview]] = []
    for t in model.graph.initializer:
        if t.name not in streamed:
            body = t.SerializeToString()
            entries.append([field_key(GRAPH_INITIALIZER, len(body)), body])
            continue
        head = onnx.TensorProto()
        head.CopyFrom(t)  # name, type, dims, doc string: all but where its data lies
        head.ClearField("data_location")
        head.ClearField("external_data")
        head_bytes = head.SerializeToString()
        buf = _buffer(skeleton.arrays[t.name])
        raw = field_key(TENSOR_RAW_DATA, buf.nbytes)
        entries.append([field_key(GRAPH_INITIALIZER, len(head_bytes) + len(raw) + buf.nbytes),
                        head_bytes, raw, buf])
    model.graph.ClearField("initializer")
    graph_bytes = model.graph.SerializeToString()
    model.ClearField("graph")
    total = len(graph_bytes) + sum(len(p) if isinstance(p, bytes) else p.nbytes
                                   for e in entries for p in e)
    yield model.SerializeToString()
    yield field_key(MODEL_GRAPH, total)
    yield graph_bytes
    for entry in entries:
        yield from entry


def write_inline(skeleton: Skeleton, fh: BinaryIO) -> None:
    """The model with every weight inline, written piece by piece."""
    if sys.byteorder != "little":  # raw_data is little-endian: let onnx convert
        fh.write(embed(skeleton).SerializeToString())
        return
    for piece in _pieces(skeleton):
        fh.write(piece)


def write_external(skeleton: Skeleton, fh: BinaryIO, data: BinaryIO, location: str) -> None:
    """The large weights into ``data`` (named ``location`` beside the model), the rest of
    the model (small initializers inline) into ``fh``."""
    model = onnx.ModelProto()
    model.CopyFrom(skeleton.model)
    offset = 0
    for t in model.graph.initializer:
        if t.name not in skeleton.arrays or t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        pad = -offset % ALIGN
        data.write(b"\0" * pad)
        offset += pad
        buf = _buffer(skeleton.arrays[t.name])
        data.write(buf)
        del t.external_data[:]
        for key, value in (("location", location), ("offset", str(offset)),
                           ("length", str(buf.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        offset += buf.nbytes
    fh.write(model.SerializeToString())


def digest(skeleton: Skeleton) -> str:
    """A short hash of the weights (names and bytes), read in place."""
    h = hashlib.blake2b(digest_size=6)
    for t in skeleton.model.graph.initializer:
        h.update(t.name.encode())
        a = skeleton.arrays.get(t.name)
        h.update(_buffer(a) if a is not None else t.SerializeToString())
    return h.hexdigest()
