"""One initializer per weight when branches read it: onnx-graphsurgeon exports a constant as
an initializer of every (sub)graph whose nodes read it, so a weight both branches of an ``If``
read (or one ``If``'s branches read from the graph around it) would be written twice.
``shared_constants`` reads such a constant, for the export, through one ``Identity`` in the
innermost graph that holds every reader; the graph is as it was afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import onnx_graphsurgeon as gs

SMALL = 16  # constants up to this many elements may be written in each graph that reads them


@contextmanager
def shared_constants(graph: gs.Graph) -> Iterator[gs.Graph]:
    """``graph`` with every weight read from more than one (sub)graph read through an
    Identity in the innermost graph around all its readers, for as long as the block runs."""
    if not any(True for n in graph.nodes for _ in n.subgraphs()):
        yield graph
        return
    reads: dict[int, list[tuple[tuple[gs.Graph, ...], gs.Node, int]]] = {}
    constants: dict[int, gs.Constant] = {}
    _collect(graph, (graph,), reads, constants)
    added: list[tuple[gs.Graph, gs.Node]] = []
    rewired: list[tuple[gs.Node, int, gs.Tensor]] = []
    for key, where in reads.items():
        const = constants[key]
        paths = {tuple(id(g) for g in path) for path, _, _ in where}
        if len(paths) < 2 or const.values.size <= SMALL:
            continue
        common = _common(path for path, _, _ in where)
        holder = common[-1]
        via = gs.Variable(f"{const.name}/shared", dtype=const.dtype, shape=list(const.shape))
        node = gs.Node("Identity", f"{const.name}/shared", inputs=[const], outputs=[via])
        holder.nodes.insert(0, node)
        added.append((holder, node))
        for path, reader, slot in where:
            if len(path) > len(common):  # a reader inside a branch of the holder's nodes
                rewired.append((reader, slot, reader.inputs[slot]))
                reader.inputs[slot] = via
    try:
        yield graph
    finally:
        for reader, slot, const in rewired:
            reader.inputs[slot] = const
        for holder, node in added:
            holder.nodes.remove(node)
            node.inputs.clear()
            node.outputs.clear()


def _collect(graph: gs.Graph, path: tuple[gs.Graph, ...], reads, constants) -> None:
    for node in graph.nodes:
        for slot, t in enumerate(node.inputs):
            if isinstance(t, gs.Constant):  # (a graph's copy copies the tensor, not its array)
                key = id(t._values)  # noqa: SLF001 - the array (or lazy proto) itself
                reads.setdefault(key, []).append((path, node, slot))
                constants.setdefault(key, t)
        for sub in node.subgraphs():
            _collect(sub, (*path, sub), reads, constants)


def _common(paths) -> tuple[gs.Graph, ...]:
    """The longest chain of graphs every path starts with."""
    paths = list(paths)
    out = []
    for level in zip(*paths, strict=False):
        if any(g is not level[0] for g in level):
            break
        out.append(level[0])
    return tuple(out)
