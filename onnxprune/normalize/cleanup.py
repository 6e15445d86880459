"""Small graph clean-ups: name nodes, drop Identity/Dropout, make shape targets constant."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..graph import const_value, replace_all_uses
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
                node.inputs.clear()
                node.outputs.clear()
                dropped += 1
            continue
        replace_all_uses(graph, dst, src)
        node.inputs.clear()
        node.outputs.clear()
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
