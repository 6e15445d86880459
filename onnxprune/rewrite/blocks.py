"""Removing residual blocks: the Add passes its stream on, and the branch goes with cleanup."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..analysis.blocks import Block
from ..ir.graph import bypass


def remove_blocks(graph: gs.Graph, blocks: list[Block]) -> int:
    """Remove ``blocks`` from ``graph``: each Add's readers read its stream instead (a graph
    output keeps its name through an Identity), and the nodes and weights only the branch used
    go. A block inside another one removed (a residual branch of a parallel block) goes with
    it. Returns the number of nodes removed."""
    before = len(graph.nodes)
    inside = {n for b in blocks for n in b.nodes}
    blocks = [b for b in blocks if b.name not in inside]
    adds = {n.name: n for n in graph.nodes if n.op == "Add"}
    outputs = {id(t) for t in graph.outputs}
    for block in blocks:
        add = adds[block.name]
        first, r = block.joins[0]  # where the stream enters (as rewired by earlier removals)
        stream = adds[first].inputs[1 - r]
        if id(add.outputs[0]) in outputs:
            add.op, add.inputs, add.attrs = "Identity", [stream], {}
        else:
            bypass(graph, add, stream)
    presents = {present for b in blocks for _, present in b.cache}
    if presents:  # the cache pairs that went with their blocks leave the interface
        graph.outputs = [t for t in graph.outputs if t.name not in presents]
    graph.cleanup().toposort()
    pasts = {past for b in blocks for past, _ in b.cache}
    graph.inputs = [t for t in graph.inputs if t.name not in pasts or t.outputs]
    return before - len(graph.nodes)
