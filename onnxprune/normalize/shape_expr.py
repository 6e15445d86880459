"""Evaluate the small shape sub-graphs exporters write (Shape -> Gather/Slice -> Concat)
into a list whose entries are ints or references to a dimension of some tensor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import const_value, input_or_none, normalize_axis, shape_of
from ..rules.reshape import divide, monomial


@dataclass(frozen=True)
class DimRef:
    """Dimension ``index`` of ``tensor`` (its static or symbolic value is ``dim``)."""

    tensor: str
    index: int
    dim: int | str | None


@dataclass(frozen=True)
class Unknown:
    """A size computed from symbolic dimensions (e.g. batch x heads): a Reshape can infer it."""


@dataclass(frozen=True)
class Product:
    """A product of dimensions with symbolic ones among them (``batch * 4``, tf2onnx's
    ``ReduceProd`` of gathered sizes), as a monomial: a static factor and symbols."""

    static: int
    symbols: tuple[str, ...]


Elem = int | DimRef | Unknown | Product


def _monomial(e: Elem) -> tuple[int, tuple[str, ...]] | None:
    """``e`` as (static factor, symbols), or None (an unknown expression)."""
    if isinstance(e, int):
        return e, ()
    if isinstance(e, Product):
        return e.static, e.symbols
    if isinstance(e, DimRef) and e.dim is not None:
        return monomial(e.dim)
    return None


def _times(elems: list[Elem]) -> Elem:
    """The product of ``elems``: an int, a ``Product``, or ``Unknown``."""
    static, symbols = 1, []
    for e in elems:
        m = _monomial(e)
        if m is None:
            return Unknown()
        static, symbols = static * m[0], symbols + list(m[1])
    return Product(static, tuple(sorted(symbols))) if symbols else int(static)
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
                else _times([x, y]) if op == "Mul" else Unknown()
                for x, y in zip(a, b, strict=True)]
    if op == "ReduceProd":  # of a shape vector: the product of its sizes (one entry)
        data = evaluate(node.inputs[0], depth + 1)
        axes = node.attrs.get("axes", [0])
        if data is None or len(node.inputs) > 1 or list(axes) not in ([0], [-1]):
            return None
        return [_times(data)]
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
    """A constant Reshape target: ints, 0 to copy an unchanged input dimension, one -1. A
    target with a -1 and one symbolic size (tf2onnx's ``[batch * heads, -1, dims]``) takes the
    -1's static value from the input's size and the -1 in the symbolic size's place."""
    in_shape = shape_of(data) or []
    out: list[int] = []
    unknown = []
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
            unknown.append(i)
    inferred = [i for i, e in enumerate(elems) if isinstance(e, int) and e == -1]
    if len(unknown) == 1 and inferred:
        return _infer_static(elems, out, unknown[0], inferred[0], in_shape)
    if len(unknown) > 1:
        return None
    return np.array(out, dtype=np.int64)


def _infer_static(elems: list[Elem], out: list[int], symbolic: int, inferred: int,
                  in_shape: list) -> np.ndarray | None:
    """``out`` with the given -1 (``inferred``) replaced by its static value, which the input's
    size over the other entries' gives when the symbols cancel, and the one symbolic entry
    (``symbolic``) by -1; None when they do not cancel."""
    total = _times([DimRef("", i, d) if d is not None else Unknown()
                    for i, d in enumerate(in_shape)]) if in_shape else Unknown()
    others = _times([elems[i] if out[i] != 0 else DimRef("", i, in_shape[i])
                     for i in range(len(elems)) if i != inferred])
    value = divide(_monomial(total), _monomial(others))
    if value is None or value[1]:  # the -1 holds a symbol: no constant says it
        return None
    fixed = list(out)
    fixed[inferred], fixed[symbolic] = value[0], -1
    return np.array(fixed, dtype=np.int64)
