"""Keep only some classes of an output: the rows of the layer that computes them go, and the
output keeps its shape.

A recognizer with 18,710 characters read by an application that needs a hundred, a
classifier's thousand classes of which a product shows ten: the weights of the classes it
never needs are often the largest part of the model. ``keep_classes`` slices the layer that
produces the output (MatMul, Gemm, or a Conv for a class axis 1) down to the kept classes,
with every per-class op between it and the output (bias adds, scales, Softmax over the class
axis, Sigmoid, ...), then puts the removed classes back as a constant: a ``Pad`` of one fill
column and a ``Gather`` that reads each class from its kept column or the fill. Decoders keep
their class numbering. The fill is what a class that cannot occur reads: 0 after Softmax,
Sigmoid, Relu or Exp (so a Softmax over the kept classes equals the original's with the others
at -inf: renormalized), -1 after Tanh; logits and LogSoftmax scores read the sample's lowest
kept score minus MARGIN (a ``ReduceMin``, a ``Sub`` and a ``Concat`` instead of the ``Pad``):
below every kept class, so argmax, top-k and a softmax taken later hold, and finite, in the
scores' own range, so a metric comparing outputs (cosine, mse) still measures the kept ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis.size import graph_params
from ..ir.graph import const_value, input_or_none, normalize_axis, shape_of, unique_name
from ..rules import layer_of

# per-class ops: (fill after it, or None: the fill of what it reads)
UNARY = {"Identity": None, "Softmax": 0.0, "Sigmoid": 0.0, "Relu": 0.0, "Exp": 0.0,
         "Tanh": -1.0, "LogSoftmax": "below"}
# logits of a removed class: this far below the lowest kept one (e^-30: 1e-13 of its weight
# under a softmax), so argmax, top-k and softmax hold and the values stay in the scores' range
MARGIN = 30.0
BINARY = ("Add", "Sub", "Mul", "Div")
LAYERS = ("MatMul", "Gemm", "Conv")


class ClassError(ValueError):
    """The output cannot be trimmed (the message says why)."""


@dataclass(frozen=True)
class Trimmed:
    output: str
    classes: int  # classes of the output
    indices: tuple[int, ...]  # the kept classes
    axis: int
    layer: str  # the node whose rows were cut
    fill: float | None  # the constant removed classes read; None: the lowest kept - MARGIN
    params_removed: int
    normalizer: str | None = None  # a Softmax / LogSoftmax over the class axis on the chain

    @property
    def kept(self) -> int:
        return len(self.indices)


def parse_classes(spec, noun: str = "class") -> tuple[int, ...]:
    """Class indices from ``"0-95,97"`` (ranges inclusive), a list of ints, or the text of a
    file with such items separated by commas, spaces or lines; sorted, each once. ``noun``:
    what the indices are, for the messages ("token")."""
    if isinstance(spec, (list, tuple, np.ndarray)):
        items = [str(int(v)) for v in spec]
    else:
        items = [s for s in str(spec).replace(",", " ").split() if s]
    out: set[int] = set()
    for item in items:
        lo, sep, hi = item.partition("-")
        try:
            a, b = (int(lo), int(hi)) if sep else (int(item), int(item))
        except ValueError:
            raise ValueError(f"{item!r} is not a {noun} index or a range like 0-95") from None
        if a < 0 or b < a:
            raise ValueError(f"{item!r}: indices are >= 0 and ranges run low-high")
        out.update(range(a, b + 1))
    if not out:
        raise ValueError(f"no {noun} index given")
    return tuple(sorted(out))


def _only_reader(tensor: gs.Tensor, graph: gs.Graph, node: gs.Node) -> None:
    others = [n for n in tensor.outputs if n is not node]
    if others or any(t is tensor for t in graph.outputs):
        raise ClassError(f"{tensor.name} is also read by "
                         f"{others[0].name if others else 'the graph outputs'}; only a chain "
                         "whose tensors feed the output alone can lose classes")


def _chain(graph: gs.Graph, out: gs.Variable) -> tuple[gs.Node, list[gs.Node], int]:
    """(the layer, the per-class ops after it from the output back, the class axis)."""
    rank = len(out.shape) if out.shape is not None else None
    if rank is None:
        raise ClassError(f"output {out.name} has no known rank")
    ops: list[gs.Node] = []
    tensor = out
    while True:
        if not tensor.inputs:
            raise ClassError(f"{tensor.name} is not computed by a layer")
        node = tensor.inputs[0]
        if node.op in LAYERS:
            view = layer_of(node)
            if view is None:
                raise ClassError(f"{node.op} node {node.name}: its weight is not a constant "
                                 "matrix whose columns are the classes (grouped, computed at "
                                 "run time, or of another rank)")
            return node, ops, view.data_axis(rank)
        if node.op not in UNARY and node.op not in BINARY:
            raise ClassError(f"{node.op} node {node.name} between the output and its layer is "
                             f"not a per-class op ({', '.join([*UNARY, *BINARY])} are)")
        ops.append(node)
        nxt = node.inputs[0]
        if node.op in BINARY:
            consts = [const_value(t) for t in node.inputs]
            if sum(c is not None for c in consts) != 1:
                raise ClassError(f"{node.op} node {node.name}: one operand must be a constant")
            nxt = node.inputs[0] if consts[1] is not None else node.inputs[1]
        _only_reader(nxt, graph, node)
        tensor = nxt


def _classes_of(layer: gs.Node) -> int:
    if layer.op == "Conv" and len(layer.inputs) > 2 and const_value(layer.inputs[2]) is None:
        raise ClassError(f"Conv node {layer.name}: its bias is not a constant")
    readers = [n.name for n in layer.inputs[1].outputs if n is not layer]
    if readers:
        raise ClassError(f"the weights of {layer.op} node {layer.name} are read by {readers[0]} "
                         "too (tied): its rows cannot go")
    return int(np.shape(layer.inputs[1].values)[layer_of(layer).weight_out_axis()])


def _cut_layer(graph: gs.Graph, layer: gs.Node, keep: np.ndarray) -> None:
    """Slice the layer's weights (and bias) to the kept classes (a weight other nodes read
    too stays for them); the layer view says which axis of its weight holds them."""

    def sliced(index: int, axis: int) -> None:
        t = layer.inputs[index]
        v = const_value(t)
        if v is None:
            raise ClassError(f"{layer.op} node {layer.name}: input {index} is not a constant")
        if v.ndim == 0 or v.shape[axis] == 1:
            return  # broadcast over the classes
        new = np.take(v, keep, axis=axis)
        layer.inputs[index] = gs.Constant(unique_name(graph, f"{t.name}_kept"),
                                          np.ascontiguousarray(new))

    sliced(1, layer_of(layer).weight_out_axis())
    bias = input_or_none(layer, 2)
    if bias is not None and const_value(bias) is not None:
        sliced(2, -1)  # a Conv's bias, a Gemm's C: classes last


def _operand_axis(node: gs.Node, axis: int, rank: int, classes: int) -> tuple[int, int] | None:
    """(input, its class axis) of a per-class op's constant, None when it broadcasts."""
    for i, t in enumerate(node.inputs):
        v = const_value(t)
        if v is None:
            continue
        a = axis - (rank - v.ndim)  # numpy broadcasting aligns from the right
        if a < 0 or v.shape[a] == 1:
            return None
        if v.shape[a] != classes:
            raise ClassError(f"{node.op} node {node.name}: its constant has {v.shape[a]} "
                             f"entries on the class axis, the output {classes}")
        return i, a
    return None


def _cut_operand(graph: gs.Graph, node: gs.Node, keep: np.ndarray, where: tuple[int, int]
                 ) -> None:
    i, a = where
    t = node.inputs[i]
    new = np.take(const_value(t), keep, axis=a)
    node.inputs[i] = gs.Constant(unique_name(graph, f"{t.name}_kept"), np.ascontiguousarray(new))


def _fill(ops: list[gs.Node]) -> float | None:
    """The constant a removed class reads, or None: the lowest kept score minus MARGIN."""
    for node in ops:  # from the output back: the last op that fixes what "absent" reads
        f = UNARY.get(node.op)
        if f is not None:
            return None if f == "below" else f
    return None


def keep_classes(graph: gs.Graph, output: str, kept) -> Trimmed:
    """Trim ``graph`` in place so only the ``kept`` classes of ``output`` are computed."""
    outs = {t.name: t for t in graph.outputs}
    if output not in outs:
        raise ClassError(f"no output {output!r} (outputs: {', '.join(outs)})")
    out = outs[output]
    layer, ops, axis = _chain(graph, out)
    rank = len(out.shape)
    classes = _classes_of(layer)
    kept = np.asarray(parse_classes(kept), dtype=np.int64)
    if kept[-1] >= classes:
        raise ClassError(f"class {int(kept[-1])} does not exist: {output} has {classes} classes")
    if kept.size == classes:
        raise ClassError(f"every one of the {classes} classes of {output} is kept: nothing to cut")
    dims = shape_of(out)
    if dims is not None and isinstance(dims[axis], int) and dims[axis] != classes:
        raise ClassError(f"{output} has {dims[axis]} entries on axis {axis}; its layer "
                         f"{layer.name} computes {classes}")
    for node in ops:
        if node.op in ("Softmax", "LogSoftmax"):
            a = node.attrs.get("axis", -1 if (graph.opset or 13) >= 13 else 1)
            if normalize_axis(a, rank) != axis or ((graph.opset or 13) < 13 and axis != rank - 1):
                raise ClassError(f"{node.op} node {node.name} does not normalize over the class "
                                 f"axis {axis}")
    dtype = np.dtype(out.dtype) if out.dtype is not None else np.dtype(np.float32)
    if dtype.kind != "f":
        raise ClassError(f"output {output} is {dtype}, not a floating-point score")
    # every check before the first change: a refused output leaves the graph as it was
    operands = [(n, w) for n in ops if n.op in BINARY
                if (w := _operand_axis(n, axis, rank, classes)) is not None]
    before = graph_params(graph)
    _cut_layer(graph, layer, kept)
    for node, where in operands:
        _cut_operand(graph, node, kept, where)
    fill = _fill(ops)
    # the chain now ends in a tensor of kept classes; the output reads them back in place
    short = gs.Variable(unique_name(graph, f"{output}_kept"), dtype=out.dtype,
                        shape=_with(out.shape, axis, int(kept.size)))
    last = out.inputs[0]
    for t in [*layer.outputs, *(o for n in ops for o in n.outputs)]:
        if t is not out and t.shape is not None:
            t.shape = _with(t.shape, axis, int(kept.size))
    last.outputs[last.outputs.index(out)] = short
    index = np.full(classes, kept.size, dtype=np.int64)
    index[kept] = np.arange(kept.size)
    padded = gs.Variable(unique_name(graph, f"{output}_padded"), dtype=out.dtype,
                         shape=_with(out.shape, axis, int(kept.size) + 1))
    if fill is None:
        padded = _below(graph, short, axis, padded, dtype)
    else:
        _pad(graph, short, axis, rank, fill, dtype, padded)
    graph.nodes.append(gs.Node("Gather", unique_name(graph, f"{output}_classes"),
                               attrs={"axis": axis},
                               inputs=[padded, gs.Constant(unique_name(graph, f"{output}_index"),
                                                           index)],
                               outputs=[out]))
    graph.cleanup().toposort()
    norm = next((n.op for n in ops if n.op in ("Softmax", "LogSoftmax")), None)
    return Trimmed(output, classes, tuple(int(k) for k in kept), axis, layer.name, fill,
                   before - graph_params(graph), norm)


def _pad(graph: gs.Graph, short: gs.Variable, axis: int, rank: int, fill: float,
         dtype: np.dtype, padded: gs.Variable) -> None:
    """``padded`` = ``short`` with one column of ``fill`` after the kept classes."""
    pads = np.zeros(2 * rank, np.int64)
    pads[rank + axis] = 1
    name = unique_name(graph, f"{short.name}_fill")
    if (graph.opset or 13) >= 11:
        ins = [short, gs.Constant(unique_name(graph, f"{short.name}_pads"), pads)]
        if fill != 0.0:  # Pad's default fill is 0
            ins.append(gs.Constant(unique_name(graph, f"{short.name}_fill_value"),
                                   np.array(fill, dtype=dtype)))
        graph.nodes.append(gs.Node("Pad", name, inputs=ins, outputs=[padded]))
    else:
        graph.nodes.append(gs.Node("Pad", name, attrs={"pads": [int(p) for p in pads],
                                                       "value": fill},
                                   inputs=[short], outputs=[padded]))


def _below(graph: gs.Graph, short: gs.Variable, axis: int, padded: gs.Variable,
           dtype: np.dtype) -> gs.Variable:
    """``padded`` = ``short`` with one column after the kept classes reading their lowest
    score minus MARGIN, per sample: below every kept class, in the scores' own range."""
    low = gs.Variable(unique_name(graph, f"{short.name}_lowest"), dtype=short.dtype)
    name = unique_name(graph, f"{short.name}_min")
    if (graph.opset or 13) >= 18:
        graph.nodes.append(gs.Node(
            "ReduceMin", name, attrs={"keepdims": 1},
            inputs=[short, gs.Constant(unique_name(graph, f"{short.name}_axis"),
                                       np.array([axis], np.int64))], outputs=[low]))
    else:
        graph.nodes.append(gs.Node("ReduceMin", name, attrs={"axes": [axis], "keepdims": 1},
                                   inputs=[short], outputs=[low]))
    fill = gs.Variable(unique_name(graph, f"{short.name}_below"), dtype=short.dtype)
    graph.nodes.append(gs.Node(
        "Sub", unique_name(graph, f"{short.name}_margin"),
        inputs=[low, gs.Constant(unique_name(graph, f"{short.name}_margin_value"),
                                 np.array(MARGIN, dtype=dtype))], outputs=[fill]))
    graph.nodes.append(gs.Node("Concat", unique_name(graph, f"{short.name}_fill"),
                               attrs={"axis": axis}, inputs=[short, fill], outputs=[padded]))
    return padded


def class_heads(graph: gs.Graph) -> list[dict]:
    """The outputs whose classes keep_classes could cut, with the layer computing them and
    its parameters (nothing changed)."""
    out = []
    for t in graph.outputs:
        try:
            layer, ops, _ = _chain(graph, t)
            classes = _classes_of(layer)
        except ClassError:
            continue
        if classes < 2:
            continue
        params = sum(int(np.prod(v.shape)) for i in layer.inputs[1:]
                     if (v := const_value(i)) is not None)
        out.append({"output": t.name, "classes": classes, "layer": layer.name,
                    "params": params})
    return out


def _with(shape, axis: int, size: int):
    if shape is None:
        return None
    s = list(shape)
    s[axis] = size
    return s
