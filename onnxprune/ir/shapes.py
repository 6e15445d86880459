"""Concrete inputs for a model with dynamic dimensions: which axis of each input is its batch,
values pinned by the user, and the shapes verification runs at, chosen without flags.

The rule (documented in the README):

- an input's **batch axis** is its first axis when that one is symbolic or 1 (a fixed batch of
  one), else its only symbolic axis (a recurrent state ``[2, batch, 128]``); inputs without
  one (scalars, fixed shapes) are fed whole;
- a **pinned** input (``--input-value sr=16000``) always gets its value;
- ``--input-shape`` fixes an input's shape in every set;
- otherwise the batch is 1 in the first set and 2 in the second, and every other symbolic
  dimension (one value per named symbol, every anonymous one on its own) takes, in order, the
  first of ``CANDIDATES`` the model runs at (the second set: the next one it runs at), a
  multiple of 32 for the usual total strides; with calibration data the first set takes its
  per-sample shapes instead;
- a dimension written as arithmetic of other named ones (Optimum's attention mask of
  ``past_sequence_length + sequence_length``) takes the value they give;
- a dimension a layer with a constant weight contracts (a Gemm's or MatMul's reduction axis,
  a Conv's input channels: ``fixed_sizes``) takes the one size that layer accepts.

Verification then runs at both sets, since a rewrite that is right at one size can be wrong at
another.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import UsageError
from .runtime import NP_TYPES, graph_inputs
from .weights import proto

CANDIDATES = (32, 64, 96, 128, 160, 192, 224, 256, 320, 384, 512, 640, 768, 1024)
Dim = int | str | None  # a size, a named symbol, or an anonymous symbolic dimension


@dataclass(frozen=True)
class InputSpec:
    """What the model declares of one input."""

    name: str
    dtype: np.dtype
    dims: tuple[Dim, ...]

    @property
    def symbolic(self) -> list[int]:
        return [i for i, d in enumerate(self.dims) if not isinstance(d, int)]

    @property
    def batch_axis(self) -> int | None:
        if self.dims and self.dims[0] == 1:
            return 0  # a fixed batch of one (what exporters write by default)
        sym = self.symbolic
        if sym and (sym[0] == 0 or len(sym) == 1):
            return sym[0]
        return None


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    out = []
    for vi in graph_inputs(model):
        tt = vi.type.tensor_type
        dims: list[Dim] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        out.append(InputSpec(vi.name, np.dtype(NP_TYPES.get(tt.elem_type, np.float32)),
                             tuple(dims)))
    return out


def parse_values(items: Mapping[str, object] | Sequence[str] | None,
                 model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Pinned input values: ``{"sr": 16000}`` or ``["sr=16000", "scale=0.5,0.5"]``, as arrays of
    the input's type, shaped like the input when it is static (a scalar for a 0-d input)."""
    if not items:
        return {}
    specs = {s.name: s for s in input_specs(model)}
    pairs = items.items() if isinstance(items, Mapping) else [
        tuple(item.split("=", 1)) if "=" in item else (item, None) for item in items]
    out = {}
    for name, raw in pairs:
        if name not in specs:
            raise UsageError(f"input value {name!r}: the model has no input of that name "
                             f"(inputs: {', '.join(specs)})")
        if raw is None:
            raise UsageError(f"input value {name!r}: expected NAME=VALUE, e.g. sr=16000")
        spec = specs[name]
        try:
            values = (np.asarray(raw) if not isinstance(raw, str)
                      else np.array([float(v) for v in raw.split(",")]))
        except ValueError:
            raise UsageError(f"input value {name}={raw}: expected numbers (comma separated)") \
                from None
        value = values.astype(spec.dtype)
        static = all(isinstance(d, int) for d in spec.dims)
        if static and value.size == int(np.prod(spec.dims, dtype=np.int64)):
            value = value.reshape(spec.dims)
        elif value.size == 1 and len(spec.dims) == 0:
            value = value.reshape(())
        elif len(spec.dims) != value.ndim:
            raise UsageError(f"input value {name}: {value.size} value(s) do not fit the input's "
                             f"shape {list(spec.dims)}")
        out[name] = value
    return out


def feeds_at(specs: Sequence[InputSpec], shapes: Mapping[str, Sequence[int]],
             pinned: Mapping[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs at ``shapes`` (floats standard normal, integers and booleans 0/1), pinned
    ones at their values."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for s in specs:
        if s.name in pinned:
            feeds[s.name] = pinned[s.name]
            continue
        dims = list(shapes[s.name])
        if np.issubdtype(s.dtype, np.floating):
            feeds[s.name] = rng.standard_normal(dims).astype(s.dtype)
        else:
            feeds[s.name] = rng.integers(0, 2, dims).astype(s.dtype)
    return feeds


def choose_shapes(model: onnx.ModelProto, *, given: Mapping[str, Sequence[int]] | None = None,
                  calib: Mapping[str, np.ndarray] | None = None,
                  pinned: Mapping[str, np.ndarray] | None = None, count: int = 2,
                  runs: Callable[[dict[str, np.ndarray]], bool] | None = None,
                  ) -> list[dict[str, list[int]]]:
    """Up to ``count`` different sets of input shapes the model runs at (see the module's rule;
    ``runs(feeds)`` says whether the model accepts them). Fully static models give one set."""
    specs = [s for s in input_specs(model) if s.name not in (pinned or {})]
    given = dict(given or {})
    unknown = sorted(set(given) - {s.name for s in input_specs(model)})
    if unknown:
        raise UsageError(f"input shape for {', '.join(unknown)}: the model has no such input")
    free = _free_symbols(specs, given)
    fixed = {k: v for k, v in fixed_sizes(model).items() if k in free}
    free = [k for k in free if k not in fixed]
    batched = any(s.batch_axis is not None and not isinstance(s.dims[s.batch_axis], int)
                  and s.name not in given for s in specs)
    if not free and not batched:
        return [_assign(specs, given, fixed, 1)]
    runs = runs or (lambda feeds: True)
    pinned = dict(pinned or {})

    def accepted(shapes: dict[str, list[int]]) -> bool:
        return runs(feeds_at(input_specs(model), shapes, pinned))

    sets: list[dict[str, list[int]]] = []
    first = _from_calib(specs, given, calib, free)
    if first is not None and accepted(first):
        sets.append(first)
    tried = []
    for value in CANDIDATES:
        if len(sets) >= count or not free and len(sets) >= 1:
            break
        shapes = _assign(specs, given, {**fixed, **{k: value for k in free}}, len(sets) + 1)
        if shapes in sets:
            continue
        tried.append(value)
        if accepted(shapes):
            sets.append(shapes)
    if not free and batched and len(sets) < count:
        extra = _assign(specs, given, fixed, 2)
        if extra not in sets and accepted(extra):
            sets.append(extra)
    if not sets:
        names = ", ".join(sorted({f"{s.name}[{i}]" for s in specs for i in s.symbolic
                                  if s.name not in given}))
        raise UsageError(f"no input shapes found that the model runs at (tried {names} = "
                         f"{', '.join(map(str, tried))}); give them with --input-shape "
                         "NAME=DxD... (and --input-value for inputs that select a branch)")
    return sets


PASS_ALONG = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "Gelu", "Erf", "Elu", "Selu", "Clip",
              "Abs", "Neg", "Cast", "Identity", "Dropout", "Softplus", "HardSigmoid")


def fixed_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """Symbolic input sizes the graph accepts one value of: an axis a layer with a constant
    weight contracts (a Gemm's or a MatMul's reduction axis, a Conv's input channels), read
    directly or through elementwise ops (a bit vector ``[N, D]`` into ``Gemm(W: [32, 8])``
    is 32 wide, whatever size the image beside it takes)."""
    g = proto(model).graph
    shapes = {i.name: list(i.dims) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].t.dims:
            shapes[n.output[0]] = list(n.attribute[0].t.dims)
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for n in g.node:
        for i, name in enumerate(n.input):
            readers.setdefault(name, []).append((n, i))

    def attr(n: onnx.NodeProto, name: str, default: int) -> int:
        return next((a.i for a in n.attribute if a.name == name), default)

    def contracted(name: str, axis: int, rank: int, depth: int = 0) -> int | None:
        for n, i in readers.get(name, []):
            w = shapes.get(n.input[1]) if len(n.input) > 1 and i == 0 else None
            if n.op_type in PASS_ALONG and i == 0 and depth < 8:
                size = contracted(n.output[0], axis, rank, depth + 1)
            elif n.op_type == "Gemm" and w and len(w) == 2 and rank == 2 and \
                    axis == (0 if attr(n, "transA", 0) else 1):
                size = w[1] if attr(n, "transB", 0) else w[0]
            elif n.op_type == "MatMul" and w and len(w) >= 2 and axis == rank - 1:
                size = w[-2]
            elif n.op_type == "Conv" and w and len(w) > 2 and axis == 1:
                size = w[1] * attr(n, "group", 1)
            else:
                size = None
            if size:
                return int(size)
        return None

    out: dict[str, int] = {}
    for s in input_specs(model):
        for axis in s.symbolic:
            if axis != s.batch_axis:
                size = contracted(s.name, axis, len(s.dims))
                if size is not None:
                    out.setdefault(_symbol(s, axis), size)
    return out


def _symbol(spec: InputSpec, axis: int) -> str:
    d = spec.dims[axis]
    return d if isinstance(d, str) else f"{spec.name}[{axis}]"


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.FloorDiv: operator.floordiv}


def evaluate_dim(expr: str, values: Mapping[str, int]) -> int | None:
    """The value of a dimension written as arithmetic of other named dimensions (Optimum's
    ``past_sequence_length + sequence_length``), or None when it is not one."""
    try:
        tree = ast.parse(expr, mode="eval").body
    except SyntaxError:
        return None

    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id in values:
            return values[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            a, b = ev(node.left), ev(node.right)
            return None if a is None or b is None else _OPS[type(node.op)](a, b)
        return None

    return ev(tree) if not isinstance(tree, ast.Name) else None


def _derived(sym: str, names: set[str]) -> bool:
    """``sym`` is an expression of other named dimensions (its value follows theirs)."""
    return evaluate_dim(sym, dict.fromkeys(names - {sym}, 1)) is not None


def _free_symbols(specs: Sequence[InputSpec], given: Mapping[str, Sequence[int]]) -> list[str]:
    out: list[str] = []
    batch = _batch_symbols(specs)
    names = {_symbol(s, i) for s in specs for i in s.symbolic}
    for s in specs:
        if s.name in given:
            continue
        for i in s.symbolic:
            sym = _symbol(s, i)
            if (i != s.batch_axis and sym not in batch and sym not in out
                    and not _derived(sym, names)):
                out.append(sym)
    return out


def _batch_symbols(specs: Sequence[InputSpec]) -> set[str]:
    return {_symbol(s, s.batch_axis) for s in specs
            if s.batch_axis is not None and not isinstance(s.dims[s.batch_axis], int)}


def _assign(specs: Sequence[InputSpec], given: Mapping[str, Sequence[int]],
            values: Mapping[str, int], batch: int) -> dict[str, list[int]]:
    batch_syms = _batch_symbols(specs)
    known = {**dict(values), **dict.fromkeys(batch_syms, batch)}
    out = {}
    for s in specs:
        if s.name in given:
            out[s.name] = list(given[s.name])
            continue
        dims = []
        for i, d in enumerate(s.dims):
            if isinstance(d, int):
                dims.append(d)
            else:
                sym = _symbol(s, i)
                dims.append(batch if i == s.batch_axis or sym in batch_syms else
                            values[sym] if sym in values else evaluate_dim(sym, known))
        out[s.name] = dims
    return out


def _from_calib(specs: Sequence[InputSpec], given: Mapping[str, Sequence[int]],
                calib: Mapping[str, np.ndarray] | None,
                free: Sequence[str]) -> dict[str, list[int]] | None:
    """The calibration data's per-sample shapes (batch 1), when it has every input."""
    if not calib or any(s.name not in calib and s.name not in given for s in specs):
        return None
    out = {}
    for s in specs:
        if s.name in given:
            out[s.name] = list(given[s.name])
            continue
        shape = list(np.shape(calib[s.name]))
        if s.batch_axis is not None and len(shape) == len(s.dims):
            shape[s.batch_axis] = 1
        out[s.name] = shape
    return out
