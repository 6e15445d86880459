"""Evaluate the small shape sub-graphs exporters write (Shape -> Gather/Slice -> Concat)
into a list whose entries are ints or references to a dimension of some tensor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import const_value, input_or_none, normalize_axis, shape_of


@dataclass(frozen=True)
class DimRef:
    """Dimension ``index`` of ``tensor`` (its static or symbolic value is ``dim``)."""

    tensor: str
    index: int
    dim: int | str | None


@dataclass(frozen=True)
class Unknown:
    """A size computed from symbolic dimensions (e.g. batch x heads): a Reshape can infer it."""


Elem = int | DimRef | Unknown
ARITHMETIC = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Div": np.floor_divide}


def evaluate(tensor: gs.Tensor, depth: int = 0) -> list[Elem] | None:
    """The 1-D int tensor's value as ints and dimension references, or None if unknown."""
    if depth > 32:
        return None
    value = const_value(tensor)
    if value is not None:
        return [int(v) for v in np.asarray(value).ravel()] if value.ndim <= 1 else None
    if not tensor.inputs:
        return None
    node = tensor.inputs[0]
    op = node.op
    if op == "Shape":
        src = node.inputs[0]
        shape = shape_of(src)
        if shape is None:
            return None
        rank = len(shape)
        start = normalize_axis(int(node.attrs.get("start", 0)), rank)
        end = node.attrs.get("end")
        end = rank if end is None else normalize_axis(int(end), rank)
        return [
            d if isinstance(d, int) else DimRef(src.name, i, d)
            for i, d in enumerate(shape)
        ][start:end]
    if op in ("Cast", "Identity"):
        return evaluate(node.inputs[0], depth + 1)
    if op in ("Unsqueeze", "Squeeze", "Reshape", "Flatten"):
        return evaluate(node.inputs[0], depth + 1)  # reshaping a 0-D/1-D shape vector
    if op == "Concat":
        parts = [evaluate(t, depth + 1) for t in node.inputs]
        return None if any(p is None for p in parts) else [e for p in parts for e in p]
    if op == "Gather":
        data = evaluate(node.inputs[0], depth + 1)
        idx = const_value(node.inputs[1])
        if data is None or idx is None:
            return None
        return [data[int(i)] for i in np.asarray(idx).ravel()]
    if op in ARITHMETIC:
        a, b = (evaluate(t, depth + 1) for t in node.inputs[:2])
        if a is None or b is None or (len(a) != len(b) and 1 not in (len(a), len(b))):
            return None
        if op == "Div" and 0 in b:
            return None
        n = max(len(a), len(b))
        a, b = a * n if len(a) == 1 else a, b * n if len(b) == 1 else b
        return [int(ARITHMETIC[op](x, y)) if isinstance(x, int) and isinstance(y, int)
                else Unknown() for x, y in zip(a, b, strict=True)]
    if op == "Slice":
        data = evaluate(node.inputs[0], depth + 1)
        bounds = [const_value(input_or_none(node, i)) for i in range(1, 5)]
        if data is None or bounds[0] is None or bounds[1] is None:
            return None
        step = 1 if bounds[3] is None else int(np.asarray(bounds[3]).ravel()[0])
        start, stop = int(np.asarray(bounds[0]).ravel()[0]), int(np.asarray(bounds[1]).ravel()[0])
        return data[slice(*slice(start, stop, step).indices(len(data)))]
    return None


def as_reshape_target(elems: list[Elem], data: gs.Tensor) -> np.ndarray | None:
    """A constant Reshape target: ints, 0 to copy an unchanged input dimension, one -1."""
    in_shape = shape_of(data) or []
    out: list[int] = []
    unknown = 0
    for i, e in enumerate(elems):
        if isinstance(e, int):
            out.append(e)
        elif isinstance(e, DimRef) and i < len(in_shape) and (
            (e.tensor == data.name and e.index == i)
            or (isinstance(e.dim, str) and e.dim == in_shape[i])
        ):
            out.append(0)
        else:
            out.append(-1)
            unknown += 1
    if unknown > 1 or (unknown == 1 and -1 in [e for e in elems if isinstance(e, int)]):
        return None
    return np.array(out, dtype=np.int64)
