"""Which graph inputs decide the branches of an ``If``: a network inside If bodies (a
voice-activity model choosing its network by sample rate) is opened, both branches side by
side (``rewrite/branches.py``), or, pinned (``--input-value``), inlined as the branch taken."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .size import unique_params


def branch_inputs(graph: gs.Graph) -> dict[str, list[str]]:
    """If node -> the graph inputs its condition is computed from (only Ifs whose condition
    is a function of graph inputs and constants, and that hold parameters in a body)."""
    out: dict[str, list[str]] = {}
    for node in graph.nodes:
        if node.op == "If" and holds_weights(node):
            found = _deciding(graph, node.inputs[0])
            if found:
                out[node.name] = found
    return out


def opened_inputs(graph: gs.Graph, opened) -> dict[str, list[str]]:
    """The same for the Ifs written as both branches (``rewrite.branches.Opened``), whose
    condition tensor is still in the graph; those opened inside another's branch left out."""
    tensors = graph.tensors()
    out: dict[str, list[str]] = {}
    for record in opened or ():
        if record.inside is None and record.cond in tensors:
            out[record.name] = _deciding(graph, tensors[record.cond])
    return out


def _deciding(graph: gs.Graph, cond: gs.Tensor) -> list[str]:
    """The graph inputs ``cond`` is computed from; empty when something else decides it (a
    node with branches of its own, a node of several results)."""
    inputs = {t.name for t in graph.inputs}
    found: set[str] = set()
    todo, seen = [cond], set()
    while todo:
        t = todo.pop()
        if t.name in seen or isinstance(t, gs.Constant):
            continue
        seen.add(t.name)
        if t.name in inputs:
            found.add(t.name)
        elif len(t.inputs) == 1 and not t.inputs[0].attrs.get("then_branch"):
            todo.extend(x for x in t.inputs[0].inputs if x is not None and x.name)
        else:
            return []
    return sorted(found)


def holds_weights(node: gs.Node) -> bool:
    """A node with a parameter of more than one element (an initializer or a Constant node's
    value, ``size.unique_params``) in a branch, or in a branch's branch; shape and index
    constants are not parameters."""
    return any(int(np.prod(t.shape)) > 1 for sub in node.subgraphs()
               for t in unique_params(sub).values())
