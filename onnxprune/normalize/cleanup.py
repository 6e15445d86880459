"""Small graph clean-ups: name nodes, drop Identity/Dropout, make shape targets constant."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import bypass, const_value, detach
from .shape_expr import as_reshape_target, evaluate


def name_nodes(graph: gs.Graph) -> int:
    """Give every node a unique name (rules, reports and --exclude refer to nodes by name)."""
    seen: set[str] = set()
    renamed = 0
    for i, node in enumerate(graph.nodes):
        if not node.name or node.name in seen:
            base = f"{node.op}_{i}"
            name, k = base, 0
            while name in seen:
                k += 1
                name = f"{base}_{k}"
            node.name = name
            renamed += 1
        seen.add(node.name)
    return renamed


def drop_identities(graph: gs.Graph) -> int:
    """Remove Identity and inference-mode Dropout nodes (rewiring their consumers)."""
    dropped = 0
    inputs = set(id(t) for t in graph.inputs)
    for node in [n for n in graph.nodes if n.op in ("Identity", "Dropout")]:
        if node.op == "Dropout" and (
            (len(node.outputs) > 1 and (node.outputs[1].outputs or node.outputs[1] in graph.outputs))
            or _training(node)
        ):
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if any(t is dst for t in graph.outputs):
            # Keep the graph output's name: the producer writes it directly when it can.
            if src.inputs and id(src) not in inputs and not any(t is src for t in graph.outputs) \
                    and len(src.outputs) == 1:
                producer = src.inputs[0]
                producer.outputs = [dst if t is src else t for t in producer.outputs]
                detach(node)
                dropped += 1
            continue
        bypass(graph, node, src)
        dropped += 1
    if dropped:
        graph.cleanup()
    return dropped


def _training(node: gs.Node) -> bool:
    if len(node.inputs) < 3:
        return False
    flag = const_value(node.inputs[2])
    return flag is None or bool(flag.ravel()[0])


def constant_reshape_targets(graph: gs.Graph) -> int:
    """Replace computed Reshape targets (Shape -> Slice -> Concat chains) by constants."""
    changed = 0
    for node in [n for n in graph.nodes if n.op == "Reshape"]:
        if isinstance(node.inputs[1], gs.Constant) or int(node.attrs.get("allowzero", 0)):
            continue
        elems = evaluate(node.inputs[1])
        if elems is None:
            continue
        target = as_reshape_target(elems, node.inputs[0])
        if target is None:
            continue
        node.inputs[1] = gs.Constant(f"{node.name}_shape", target)
        changed += 1
    if changed:
        graph.cleanup()
    return changed


# recurrent ops whose inputs 5 and 6 are optional initial states (onnxruntime's int8 LSTM too)
RECURRENT = ("RNN", "GRU", "LSTM", "DynamicQuantizeLSTM")


def drop_zero_initial_states(graph: gs.Graph) -> int:
    """RNN/GRU/LSTM initial states that are all zeros (a ConstantOfShape of 0, as torch
    exports them) are dropped: an absent initial state is zero by definition."""
    dropped = 0
    for node in [n for n in graph.nodes if n.op in RECURRENT]:
        for i in (5, 6):
            if i >= len(node.inputs):
                continue
            t = node.inputs[i]
            if isinstance(t, gs.Variable) and t.is_empty():
                continue
            value = const_value(t)
            if value is None and t.inputs and t.inputs[0].op == "ConstantOfShape":
                fill = t.inputs[0].attrs.get("value")
                fill = np.asarray(fill.values if isinstance(fill, gs.Constant) else 0)
                value = fill if not np.any(fill) else None
            if value is not None and not np.any(value):
                node.inputs[i] = gs.Variable.empty()
                dropped += 1
    if dropped:
        graph.cleanup()
    return dropped


def channel_shuffles_to_gather(graph: gs.Graph) -> int:
    """Reshape [N, C, ...] -> [N, g, C/g, ...] -> Transpose(1 <-> 2) -> Reshape [N, C, ...]
    (channel shuffle) becomes one Gather of the permuted channels: the same values, and a
    channel map the analysis follows without coupling the shuffled groups."""
    from ..ir.graph import shape_of

    changed = 0
    for first in [n for n in graph.nodes if n.op == "Reshape"]:
        if not first.outputs:  # the last Reshape of a shuffle already replaced
            continue
        mid = first.outputs[0]
        if len(mid.outputs) != 1 or mid.outputs[0].op != "Transpose":
            continue
        trans = mid.outputs[0]
        if len(trans.outputs[0].outputs) != 1 or trans.outputs[0].outputs[0].op != "Reshape":
            continue
        last = trans.outputs[0].outputs[0]
        x, y = first.inputs[0], last.outputs[0]
        xs, ms, ys = shape_of(x), shape_of(mid), shape_of(y)
        if not xs or not ms or not ys or xs != ys or len(ms) != len(xs) + 1:
            continue
        c, g, cg = xs[1] if len(xs) > 1 else None, ms[1], ms[2]
        perm = list(trans.attrs.get("perm", []))
        if not all(isinstance(d, int) for d in (c, g, cg)) or g * cg != c:
            continue
        if perm != [0, 2, 1, *range(3, len(ms))] or ms[3:] != xs[2:]:
            continue
        idx = np.array([(k % g) * cg + k // g for k in range(c)], dtype=np.int64)
        gather = gs.Node("Gather", first.name + "_shuffle", {"axis": 1},
                         [x, gs.Constant(first.name + "_shuffle_idx", idx)], [y])
        last.outputs.clear()
        graph.nodes.append(gather)
        changed += 1
    if changed:
        graph.cleanup().toposort()
    return changed


def explicit_squeeze_axes(graph: gs.Graph) -> int:
    """Squeeze without axes drops every size-1 axis, which would include a channel axis
    pruned down to one channel: name the axes it drops now, while the shapes are original.
    A symbolic size (a batch that may be 1) is not guessed: such a Squeeze stays as it is."""
    from ..ir.graph import shape_of

    changed = 0
    for node in [n for n in graph.nodes if n.op == "Squeeze"]:
        has_axes = "axes" in node.attrs or (
            len(node.inputs) > 1 and not (isinstance(node.inputs[1], gs.Variable)
                                          and node.inputs[1].is_empty()))
        shape = shape_of(node.inputs[0])
        if has_axes or shape is None or any(not isinstance(d, int) for d in shape):
            continue
        axes = [i for i, d in enumerate(shape) if d == 1]
        if int(graph.opset) < 13:
            node.attrs["axes"] = axes
        else:
            const = gs.Constant(f"{node.name}_axes", np.array(axes, dtype=np.int64))
            if len(node.inputs) > 1:
                node.inputs[1] = const
            else:
                node.inputs.append(const)
        changed += 1
    return changed


def shape_ranges_to_slices(graph: gs.Graph) -> int:
    """``Shape(x, start, end)`` (opset 15) as ``Slice(Shape(x))``: onnx-graphsurgeon folds a
    Shape to the whole shape whatever its range, which turns a static export's ``seq_len`` into
    ``[batch, seq]``; a Slice of the whole shape folds right."""
    changed = 0
    for node in [n for n in graph.nodes if n.op == "Shape"]:
        start, end = node.attrs.pop("start", None), node.attrs.pop("end", None)
        if start is None and end is None:
            continue
        whole = gs.Variable(f"{node.name}_whole", dtype=np.int64)
        out = node.outputs[0]
        node.outputs[0] = whole
        lo = np.array([0 if start is None else int(start)], np.int64)
        hi = np.array([np.iinfo(np.int64).max if end is None else int(end)], np.int64)
        graph.nodes.append(gs.Node("Slice", f"{node.name}_range", inputs=[
            whole, gs.Constant(f"{node.name}_start", lo), gs.Constant(f"{node.name}_end", hi)],
            outputs=[out]))
        changed += 1
    if changed:
        graph.toposort()
    return changed


def pin_inputs(graph: gs.Graph, values: dict[str, np.ndarray]) -> int:
    """Every use of a pinned input reads its value as a constant instead, so that what depends
    on it folds (a sample-rate input choosing a branch). The input stays declared, unused, so
    callers that pass it keep working."""
    pinned = 0
    for t in graph.inputs:
        if t.name not in values or not t.outputs:
            continue
        const = gs.Constant(f"{t.name}_pinned", np.asarray(values[t.name]))
        for consumer in list(t.outputs):
            consumer.inputs[[x is t for x in consumer.inputs].index(True)] = const
        pinned += 1
    return pinned


def unshare_filled_vectors(graph: gs.Graph) -> int:
    """A 1-D constant of one repeated value (zeros, ones) read by several nodes gets a copy
    per reader. Exporters deduplicate equal initializers, so two layers' zero biases arrive as
    one tensor; kept shared they would tie the layers' channels together, although nothing but
    the exporter links them. (Shared tensors of any other value stay shared: tied weights.)"""
    copies = 0
    for tensor in list(graph.tensors().values()):
        if not isinstance(tensor, gs.Constant) or len(tensor.outputs) < 2:
            continue
        values = np.asarray(tensor.values)
        if values.ndim != 1 or values.size < 2 or not np.all(values == values.flat[0]):
            continue
        for i, consumer in enumerate(list(tensor.outputs)[1:]):
            copy = gs.Constant(f"{tensor.name}_copy{i + 1}", values.copy())
            consumer.inputs[[t is tensor for t in consumer.inputs].index(True)] = copy
            copies += 1
    return copies
