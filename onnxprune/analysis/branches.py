"""Which graph inputs decide the branches of an ``If``: a network inside If bodies (a
voice-activity model choosing its network by sample rate) is not analyzed until the input that
decides the condition is pinned (``--input-value``), which inlines the branch taken."""

from __future__ import annotations

import onnx_graphsurgeon as gs


def branch_inputs(graph: gs.Graph) -> dict[str, list[str]]:
    """If node -> the graph inputs its condition is computed from (only Ifs whose condition
    is a function of graph inputs and constants, and that hold parameters in a body)."""
    inputs = {t.name for t in graph.inputs}
    out: dict[str, list[str]] = {}
    for node in graph.nodes:
        if node.op != "If" or not _holds_weights(node):
            continue
        found: set[str] = set()
        todo, seen, ok = [node.inputs[0]], set(), True
        while todo and ok:
            t = todo.pop()
            if t.name in seen or isinstance(t, gs.Constant):
                continue
            seen.add(t.name)
            if t.name in inputs:
                found.add(t.name)
            elif len(t.inputs) == 1 and not t.inputs[0].attrs.get("then_branch"):
                todo.extend(x for x in t.inputs[0].inputs if x is not None and x.name)
            else:
                ok = False
        if ok and found:
            out[node.name] = sorted(found)
    return out


def _holds_weights(node: gs.Node) -> bool:
    for value in node.attrs.values():
        if isinstance(value, gs.Graph) and any(
                isinstance(t, gs.Constant) and t.values.size > 1
                for n in value.nodes for t in n.inputs):
            return True
    return False
