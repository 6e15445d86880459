"""The inputs of a graph's layers in graph order, each computed with the weights every layer
before it has at that moment, and every node run once: compensation refits layer after layer,
and the input of the next one is what the nodes between them make from the tensors live where
the last one stood (held for every sample). Running the whole prefix again for each layer
cost PP-OCR rec's compensation 11 s of its 13 (51 layers).

``Sweep.input_of(node)`` walks forward to ``node`` (never back: a later call for an earlier
node is an error); the graph's weights are read as they are at each call."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .. import interrupts
from ..ir.arrays import axes_of
from ..ir.graph import export_skeleton
from ..ir.runtime import chunks, one_sample, session, static_batch
from ..ir.weights import proto
from ..search.memory import room, rows_for, search_budget, tensor_bytes
from ..search.prefix import live_bytes, suffix, uses

HELD_BYTES = 1 << 30  # what the live tensors may hold for every sample (else: no sweep)


class Sweep:
    """Layer inputs of ``graph`` on ``feeds``, computed forward (see the module)."""

    def __init__(self, graph: gs.Graph, feeds: dict[str, np.ndarray], model: onnx.ModelProto,
                 plan: tuple[dict, dict, dict]):
        """``model``: the graph exported; ``plan``: its nodes' (positions, produced, last)
        (``planned`` makes both)."""
        self.graph = graph
        self.position, self.produced, self.last = plan
        self.axes = axes_of(feeds)
        self.feeds = dict(feeds)
        rows = rows_for(model, self.feeds, self.axes, search_budget(0.25))
        parts = list(chunks(self.feeds, rows, self.axes, static_batch(model, self.feeds, self.axes)))
        self.chunks = [chunk for chunk, _ in parts]
        self.valid = [valid for _, valid in parts]
        self.at = 0
        self.live: list[dict[str, np.ndarray]] = [{} for _ in self.chunks]  # per chunk
        self.runs = 0

    def input_of(self, node: gs.Node) -> np.ndarray:
        """The node's first input on every sample (concatenated along axis 0, as
        ``run_batched`` gives it), the nodes before it run with the weights they have now."""
        q = self.position[node.name]
        if q < self.at:
            raise ValueError(f"sweep: {node.name} comes before where the sweep stands")
        if q > self.at:
            self._advance(q)
        name = node.inputs[0].name
        parts = [live[name] if name in live else chunk[name]
                 for live, chunk in zip(self.live, self.chunks, strict=True)]
        parts = [p if valid is None else p[:valid] for p, valid in zip(parts, self.valid,
                                                                        strict=True)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _advance(self, q: int) -> None:
        """Run the nodes from where the sweep stands to node ``q`` (excluded)."""
        p = self.at
        live_at_q = [t for t, at in self.produced.items() if at < q <= self.last.get(t, -1)]
        made = [t for t in live_at_q if self.produced[t] >= p]
        if made:
            types = {t: a.dtype for t, a in self.live[0].items()}
            model = suffix(export_skeleton(self.graph), p, types, made, end=q)
            sess = session(model, arena=False)
            reads = {i.name for i in sess.get_inputs()}
            outputs = [o.name for o in sess.get_outputs()]
            for i, (chunk, live) in enumerate(zip(self.chunks, self.live, strict=True)):
                feeds = {k: v for k, v in {**chunk, **live}.items() if k in reads}
                got = dict(zip(outputs, sess.run(outputs, feeds, interrupts.run_options()),
                               strict=True))
                self.live[i] = {t: live[t] if t in live else got[t] for t in live_at_q}
            self.runs += 1
        else:
            self.live = [{t: live[t] for t in live_at_q} for live in self.live]
        self.at = q


def planned(graph: gs.Graph, feeds: dict[str, np.ndarray], nodes: list[gs.Node]
            ) -> Sweep | None:
    """A ``Sweep`` of ``graph`` on ``feeds`` to the ``nodes``, or None when the tensors live
    at those nodes would hold more than ``HELD_BYTES`` for every sample (or their sizes
    cannot be inferred): then each layer's input is computed on its own."""
    model = export_skeleton(graph)
    g = proto(model).graph
    order = list(g.node)
    position = {n.name: i for i, n in enumerate(order)}
    if any(n.name not in position for n in nodes):
        return None
    produced, last = uses(g, order)
    if any(produced.get(t, -1) >= i for i, n in enumerate(order) for t in n.input if t):
        return None  # not in graph order
    axes = axes_of(feeds)
    sizes = tensor_bytes(model, one_sample(feeds, axes))
    if not sizes:
        return None
    samples = max((np.shape(v)[a] for k, v in feeds.items()
                   if (a := axes.get(k)) is not None), default=1)
    held = live_bytes(produced, last, sizes, len(order))
    most = max(int(held[position[n.name]]) for n in nodes) if nodes else 0
    if most * samples > room(HELD_BYTES, 0.25):
        return None
    return Sweep(graph, feeds, proto(model), (position, produced, last))

