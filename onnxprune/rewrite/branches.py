"""Networks inside ``If`` branches chosen at run time (a voice-activity model keeps one network
per sample rate): ``open_ifs`` writes each such ``If`` as both branches side by side and a
``Where`` per output, so the analysis sees every layer (weights both branches read join one
group, like any shared weight); ``close_ifs`` moves them back into the branches after the cut.

A branch is taken back by dominance, not by names: a node belongs to the 'then' branch when
everything it computes is read only by that branch (and the ``Where``'s 'then' input), so nodes
the cut added (a Slice, a Gather) go where their readers are. A constant both branches (or the
graph around them) read stays one array in the outer graph, read through an ``Identity``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis.branches import holds_weights
from ..ir.graph import adopt


@dataclass
class Opened:
    """One ``If`` written as its two branches: its name, condition, the ``Where`` nodes (one
    per output, in order) that choose between them, and the opened If it was in a branch of."""

    name: str
    cond: str
    wheres: list[str]
    inside: str | None = None


def open_ifs(graph: gs.Graph) -> list[Opened]:
    """Open every ``If`` whose branches hold weights; returns them in the order opened (an If
    inside a branch is opened after the one around it)."""
    opened: list[Opened] = []
    within: dict[int, str] = {}  # a node of an opened branch -> the If it was in
    index = 0
    while index < len(graph.nodes):
        node = graph.nodes[index]
        if node.op != "If" or not holds_weights(node):
            index += 1
            continue
        nodes, record = _open(node)
        record.inside = within.get(id(node))
        within.update((id(n), record.name) for n in nodes)
        graph.nodes[index:index + 1] = nodes
        opened.append(record)  # (the branches' own Ifs come next in the list: opened too)
    if opened:
        graph.toposort()
    return opened


def _open(node: gs.Node) -> tuple[list[gs.Node], Opened]:
    name = node.name
    then, other = node.attrs["then_branch"], node.attrs["else_branch"]
    cond = node.inputs[0]
    nodes = adopt(then, f"{name}/then") + adopt(other, f"{name}/else")
    scalar = gs.Variable(f"{name}/cond", dtype=np.bool_, shape=[])
    nodes.append(gs.Node("Reshape", f"{name}/cond", inputs=[
        cond, gs.Constant(f"{name}/scalar", np.zeros(0, np.int64))], outputs=[scalar]))
    wheres = []
    for i, (out, a, b) in enumerate(zip(node.outputs, then.outputs, other.outputs,
                                        strict=False)):
        where = gs.Node("Where", f"{name}/where_{i}", inputs=[scalar, a, b], outputs=[out])
        nodes.append(where)
        wheres.append(where.name)
    node.outputs.clear()
    node.inputs.clear()
    return nodes, Opened(name, cond.name, wheres)


def close_ifs(graph: gs.Graph, opened: list[Opened]) -> None:
    """Write each opened ``If`` back (the last opened first: an If opened inside a branch goes
    back into it before that branch is taken back)."""
    for record in reversed(opened):
        _close(graph, record)
    graph.cleanup().toposort()


def _close(graph: gs.Graph, record: Opened) -> None:
    by_name = {n.name: n for n in graph.nodes}
    missing = [w for w in record.wheres if w not in by_name]
    if missing:
        raise ValueError(f"the choice between the branches of {record.name} is gone "
                         f"({missing[0]})")
    wheres = [by_name[w] for w in record.wheres]
    readers = _readers(graph)
    regions = [_region(graph, readers, wheres, slot) for slot in (1, 2)]
    inside = {id(n) for region in regions for n in region}
    branches = [_branch(f"{record.name}_{which}", region, [w.inputs[slot] for w in wheres])
                for which, region, slot in (("then", regions[0], 1), ("else", regions[1], 2))]
    cond = wheres[0].inputs[0]
    source = cond.inputs[0].inputs[0] if cond.inputs and cond.inputs[0].op == "Reshape" else cond
    outputs = [w.outputs[0] for w in wheres]
    node = gs.Node("If", record.name, inputs=[source], outputs=outputs,
                   attrs={"then_branch": branches[0], "else_branch": branches[1]})
    # where the first Where was: after what the branches read, before what reads them (the
    # order the next If's branches are found in)
    choices = {id(w) for w in wheres}
    first = min(i for i, n in enumerate(graph.nodes) if id(n) in choices)
    kept = [node if i == first else n for i, n in enumerate(graph.nodes)
            if i == first or (id(n) not in inside and id(n) not in choices)]
    for w in wheres:
        w.outputs.clear()
        w.inputs.clear()
    graph.nodes = kept


def _reads(node: gs.Node) -> list[gs.Tensor]:
    """What a node reads: its inputs and the outer tensors its branches read."""
    out = [t for t in node.inputs if t is not None]
    for sub in node.subgraphs():
        local = {id(o) for n in sub.nodes for o in n.outputs} | {id(t) for t in sub.inputs}
        out += [t for t in sub.tensors().values()
                if id(t) not in local and not isinstance(t, gs.Constant)]
        out += [t for n in sub.nodes for t in _reads(n) if id(t) not in local
                and not isinstance(t, gs.Constant)]
    return out


def _readers(graph: gs.Graph) -> dict[int, list[tuple[gs.Node, int]]]:
    """tensor id -> (node, input slot) reading it (slot -1: read inside the node's branches)."""
    readers: dict[int, list[tuple[gs.Node, int]]] = {}
    for node in graph.nodes:
        for i, t in enumerate(node.inputs):
            if t is not None:
                readers.setdefault(id(t), []).append((node, i))
        for t in _reads(node)[len([t for t in node.inputs if t is not None]):]:
            readers.setdefault(id(t), []).append((node, -1))
    return readers


def _region(graph: gs.Graph, readers, wheres: list[gs.Node], slot: int) -> list[gs.Node]:
    """The nodes whose every result is read only inside the branch (or by the Wheres' input
    ``slot``): the branch's own nodes, in graph order."""
    outputs = {id(t) for t in graph.outputs}
    want = {id(w) for w in wheres}
    ancestors: set[int] = set()
    todo = [w.inputs[slot] for w in wheres]
    while todo:
        t = todo.pop()
        for producer in t.inputs:
            if id(producer) not in ancestors:
                ancestors.add(id(producer))
                todo.extend(_reads(producer))
    region: set[int] = set()
    for node in reversed(graph.nodes):  # readers are decided before what they read
        if id(node) not in ancestors or id(node) in want:
            continue
        if all(id(t) not in outputs and all(
                id(r) in region or (id(r) in want and i == slot) for r, i in readers.get(
                    id(t), [])) for t in node.outputs):
            region.add(id(node))
    return [n for n in graph.nodes if id(n) in region]


def _branch(name: str, region: list[gs.Node], results: list[gs.Tensor]) -> gs.Graph:
    """The branch graph: the region's nodes; a result it does not compute itself (an outer
    tensor passed through) or gives twice is given through an Identity."""
    nodes = list(region)
    produced = {id(o) for n in nodes for o in n.outputs}
    outputs, given = [], set()
    for i, t in enumerate(results):
        if id(t) not in produced or id(t) in given:
            copy = gs.Variable(f"{name}/out_{i}", dtype=t.dtype, shape=t.shape)
            nodes.append(gs.Node("Identity", f"{name}/out_{i}", inputs=[t], outputs=[copy]))
            t = copy
        given.add(id(t))
        outputs.append(t)
    return gs.Graph(nodes=nodes, inputs=[], outputs=outputs, name=name)
