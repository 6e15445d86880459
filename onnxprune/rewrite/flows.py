"""Flow adapters: an identity Gather on the channel axis where a tensor crosses into another
component. The Gather's rule gives the reading side channels of its own, linked to the
producer's, so groups stay inside components; a channel leaves the producer only when every
reading component lets it go. After removal, Gathers that select everything are dropped."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis.components import ADAPTER, Components, Flow
from ..analysis.model import ChannelAnalysis
from ..ir.graph import bypass, const_value, replace_input, unique_name


def insert_flow_adapters(graph: gs.Graph, components: Components, flows: list[Flow],
                         analysis: ChannelAnalysis) -> int:
    """Insert adapters for the ``own`` flows on every channel axis the analysis tracks."""
    tensors = graph.tensors()
    nodes = {n.name: n for n in graph.nodes}
    inserted = 0
    for flow in flows:
        if flow.policy != "own":
            continue
        axes = sorted(ax for (t, ax) in analysis.slots if t == flow.tensor)
        for consumer in flow.consumers:
            src = tensors[flow.tensor]
            for axis in axes:
                src = _adapter(graph, src, axis, nodes[consumer], components)
                inserted += 1
    if inserted:
        graph.toposort()
    return inserted


def _adapter(graph: gs.Graph, src: gs.Tensor, axis: int, consumer: gs.Node,
             components: Components) -> gs.Tensor:
    size = int(src.shape[axis])
    name = unique_name(graph, f"{ADAPTER}/{src.name}/{consumer.name}")
    out = gs.Variable(name + "_out", dtype=src.dtype, shape=list(src.shape))
    idx = gs.Constant(name + "_idx", np.arange(size, dtype=np.int64))
    graph.nodes.append(gs.Node("Gather", name, {"axis": axis}, [src, idx], [out]))
    replace_input(consumer, src, out)
    components.of_node[name] = components.of_node[consumer.name]
    return out


def drop_identity_gathers(graph: gs.Graph) -> int:
    """Remove channel Gathers that select every channel in order (what adapters become when
    both sides cut the same channels)."""
    dropped = 0
    outputs = {id(t) for t in graph.outputs}
    for node in [n for n in graph.nodes if n.op == "Gather" and n.name.startswith(ADAPTER)]:
        x, y = node.inputs[0], node.outputs[0]
        idx = const_value(node.inputs[1])
        axis = int(node.attrs.get("axis", 0))
        shape = x.shape
        if idx is None or shape is None or not isinstance(shape[axis], int) or id(y) in outputs:
            continue
        if idx.ndim == 1 and np.array_equal(idx, np.arange(shape[axis])):
            bypass(graph, node, x)
            dropped += 1
    if dropped:
        graph.cleanup()
    return dropped
