"""A model file's inline weights read where they lie: the file is memory-mapped, its protobuf
encoding walked (keys and lengths only) to find each large initializer's ``raw_data``, and only
the rest (nodes, shapes, small tensors) is parsed. The weights are never copied into a parsed
message and then out again; pages are read when the weights are used, and belong to the file.

The walk understands the protobuf wire format as onnx writes it; anything else it meets
(groups, a graph field given twice, a value running past its message) makes it give up, and
the caller parses the file the usual way.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import onnx

from .weights import EXTERNAL_BYTES, NP_TYPES

MODEL_GRAPH, GRAPH_INITIALIZER = 7, 5  # onnx.proto field numbers
TENSOR_DATA_TYPE, TENSOR_RAW_DATA = 2, 9


class Unusual(Exception):
    """The encoding is not what this walk reads: parse the file instead."""


def _varint(buf, i: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= end or shift > 63:
            raise Unusual("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, wire type, key start, value start, value end) of each field."""
    i = start
    while i < end:
        key_start = i
        key, i = _varint(buf, i, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, j = _varint(buf, i, end)
        elif wire == 1:
            j = i + 8
        elif wire == 5:
            j = i + 4
        elif wire == 2:
            length, i = _varint(buf, i, end)
            j = i + length
        else:
            raise Unusual(f"wire type {wire}")
        if j > end:
            raise Unusual("a value runs past its message")
        yield field, wire, key_start, i, j
        i = j


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_key(field: int, length: int) -> bytes:
    """The tag and length of a length-delimited field (wire type 2)."""
    return _encode_varint(field << 3 | 2) + _encode_varint(length)


def _raw_field(buf, start: int, end: int) -> tuple[int, int, int, int] | None:
    """In a TensorProto at [start, end): (span start, span end, data start, data type) of a
    raw_data field large enough to map, or None."""
    found, dtype = None, 0
    for field, wire, key_start, v0, v1 in _fields(buf, start, end):
        if field == TENSOR_RAW_DATA and wire == 2:
            if found is not None:
                return None  # given twice (merged by parsers): parse it the usual way
            found = (key_start, v1, v0)
        elif field == TENSOR_DATA_TYPE and wire == 0:
            dtype, _ = _varint(buf, v0, v1)
    if found is None or found[1] - found[2] < EXTERNAL_BYTES or dtype not in NP_TYPES:
        return None
    return (*found, dtype)


def read_mapped(path: str | Path) -> tuple[onnx.ModelProto, dict[int, np.ndarray]] | None:
    """The model in ``path`` without its large inline initializers' bytes, and those values as
    read-only arrays over the mapped file, by initializer index; None when the walk gives up
    (or there is nothing to map)."""
    with open(path, "rb") as fh:
        try:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file
            return None
        try:
            return _read(mm, fh.fileno())
        except Unusual:
            return None


def _read(mm: mmap.mmap, fd: int) -> tuple[onnx.ModelProto, dict[int, np.ndarray]] | None:
    size = len(mm)
    graphs = [f for f in _fields(mm, 0, size) if f[0] == MODEL_GRAPH and f[1] == 2]
    if len(graphs) != 1:
        raise Unusual("not one graph field")
    _, _, g_key, g0, g1 = graphs[0]
    pieces: list[bytes] = []
    spans: dict[int, tuple[int, int, int]] = {}  # initializer index -> (data start, bytes, type)
    cursor, index = g0, 0
    for field, wire, key_start, v0, v1 in _fields(mm, g0, g1):
        if field != GRAPH_INITIALIZER or wire != 2:
            continue
        raw = _raw_field(mm, v0, v1)
        if raw is not None:
            r0, r1, d0, dtype = raw
            pieces.append(mm[cursor:key_start])
            pieces.append(field_key(GRAPH_INITIALIZER, (v1 - v0) - (r1 - r0)))
            pieces.append(mm[v0:r0])
            pieces.append(mm[r1:v1])
            cursor = v1
            spans[index] = (d0, r1 - d0, dtype)
        index += 1
    if not spans:
        return None
    pieces.append(mm[cursor:g1])
    graph_len = sum(len(p) for p in pieces)
    encoded = b"".join([mm[:g_key], field_key(MODEL_GRAPH, graph_len), *pieces, mm[g1:]])
    model = onnx.ModelProto.FromString(encoded)
    arrays = {}
    for i, (start, nbytes, dtype) in spans.items():
        t = model.graph.initializer[i]
        np_type = np.dtype(NP_TYPES[dtype])
        count = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
        if count * np_type.itemsize != nbytes:
            raise Unusual(f"{t.name}: {nbytes} bytes for {count} values")
        if start % np_type.itemsize:
            # unaligned for its type (onnxruntime would copy it on every run): read a copy,
            # straight from the file, so that the mapped pages are not touched as well
            a = np.empty(count, np_type)
            if os.preadv(fd, [memoryview(a).cast("B")], start) != nbytes:
                raise Unusual(f"{t.name}: short read")
            a.flags.writeable = False
        else:
            a = np.frombuffer(mm, np_type, count, start)
        arrays[i] = a.reshape(tuple(t.dims))
    return model, arrays
