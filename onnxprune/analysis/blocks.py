"""Removable blocks: residual branches ``y = x + f(x)`` whose removal leaves ``y = x``.

A block is an ``Add`` of a stream ``x`` and a branch output ``f(x)`` that is computed from ``x``:
the branch is every node that descends from ``x`` and leads to ``f(x)``. It is removable when
nothing but the ``Add`` reads what the branch computes (no other node, no graph output such as a
key/value cache) and the ``Add``'s output has the stream's shape, so the stream can take its
place. This covers pre-norm transformer sub-blocks (LayerNorm or RMSNorm, one op or spelled
out), post-norm ones (``LN(x + f(x))`` becomes ``LN(x)``), layer scale, and CNN blocks with an
identity shortcut (ResNet, MobileNetV2, ConvNeXt), and attention and MLP side by side on one
stream (``x + f(x) + g(x)``, parallel blocks). An ``Add`` of two branches (a projection
shortcut) has no stream and is not a block. ``unit="layer"`` makes a transformer layer (its
attention and MLP blocks) one unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import onnx_graphsurgeon as gs

from .cache import cache_pairs
from .components import ADAPTER
from .model import ChannelAnalysis, Gate
from .size import is_param

SHAPE_OPS = ("Shape", "Size")  # read a tensor's shape, not its values
WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum")


@dataclass(frozen=True)
class Block:
    name: str  # the (last) Add that joins the branch to the stream: its output becomes the stream
    kind: str  # attention, mlp, conv, residual; parallel (attention and MLP side by side); layer
    stream: str  # the tensor the branch reads and the block passes on without it
    joins: tuple[tuple[str, int], ...]  # (Add, input index) where each branch output joins
    nodes: tuple[str, ...]  # the branch's nodes (with the inner Adds of a parallel block or layer)
    params: int  # weights only the branch reads
    macs: int  # the branch's multiply-accumulates per sample
    removable: bool
    reason: str | None = None
    cache: tuple[tuple[str, str], ...] = ()  # (past input, present output) pairs that go with it


def find_blocks(graph: gs.Graph, node_macs: Mapping[str, int] | None = None,
                unit: str = "block", cache: bool = False) -> list[Block]:
    """Every residual branch of ``graph`` (a normalized, named, topologically sorted graph), in
    graph order, each removable or with the reason it is not. ``unit``: "layer" joins each
    removable block with the removable block that reads its output (a transformer layer's
    attention and MLP), one unit. ``cache``: an attention block may take its key/value cache
    pair with it (the past input and the present output leave the interface)."""
    g = _Graph(graph, node_macs or {}, cache_pairs(graph))
    g.cache_open = cache
    blocks: list[Block] = []
    for add in g.nodes:
        if add.op != "Add" or len(add.inputs) != 2 or any(
                isinstance(t, gs.Constant) for t in add.inputs):
            continue
        for r in (1, 0):  # the branch usually comes second (x + f(x))
            block = g.block(add.inputs[1 - r], [(add, r)])
            if block is not None:
                blocks.append(block)
                break
        else:
            block = g.parallel(add)
            if block is not None:
                blocks.append(block)
    # an Add inside a removable block that is not itself removable (an attention mask added to
    # the scores; the first Add of a parallel block) is the block's arithmetic, not a block
    inside = {n for b in blocks if b.removable for n in b.nodes}
    blocks = [b for b in blocks if b.removable or b.name not in inside]
    return g.layers(blocks) if unit == "layer" else blocks


class _Graph:
    def __init__(self, graph: gs.Graph, node_macs: Mapping[str, int], pairs=()):
        self.present = {p.present: p.past for p in pairs}
        self.cache_open = False
        self.nodes = list(graph.nodes)
        self.order = {id(n): i for i, n in enumerate(self.nodes)}
        self.by_name = {n.name: n for n in self.nodes}
        self.outputs = {t.name for t in graph.outputs}
        self.macs = node_macs

    def block(self, stream: gs.Tensor, joins: list[tuple[gs.Node, int]],
              inner: tuple[gs.Node, ...] = ()) -> Block | None:
        """The block whose branch outputs (the inputs ``joins`` name) are computed from
        ``stream``; ``inner``: Adds between the joins that belong to the block."""
        order = self.order
        stream = _source(stream)  # a flow adapter reads the stream for one component
        start = order[id(stream.inputs[0])] if stream.inputs else -1
        outs = [add.inputs[r] for add, r in joins]
        if any(not t.inputs or order[id(t.inputs[0])] <= start for t in outs):
            return None
        # the nodes between the stream and the branch outputs that lead to them ...
        region, todo = {}, [t.inputs[0] for t in outs]
        while todo:
            node = todo.pop()
            if id(node) in region or order[id(node)] <= start:
                continue
            region[id(node)] = node
            todo += [t.inputs[0] for t in node.inputs if t.inputs]
        # ... and of those, the ones computed from the stream's values: the branch (a shape
        # read off the stream is not its values: a mask sized by it serves every layer)
        branch: dict[int, gs.Node] = {}
        ranked = sorted(region.values(), key=lambda n: order[id(n)])
        for node in ranked:
            if node.op not in SHAPE_OPS and any(
                    t is stream or (t.inputs and id(t.inputs[0]) in branch) for t in node.inputs):
                branch[id(node)] = node
        if any(id(t.inputs[0]) not in branch for t in outs):
            return None  # an output that does not depend on the stream
        if not any(n.op in WEIGHTED and any(isinstance(t, gs.Constant) for t in n.inputs[1:])
                   for n in branch.values()):
            return None  # arithmetic on the stream (x + 0.044715 x^3 in a GELU), not a block
        for node in inner:
            branch[id(node)] = node
        for node in reversed(ranked):  # helpers that serve the branch alone go with it
            if id(node) not in branch and all(
                    id(reader) in branch for t in node.outputs for reader in t.outputs) and all(
                    t.name not in self.outputs for t in node.outputs):
                branch[id(node)] = node
        members = sorted(branch.values(), key=lambda n: order[id(n)])
        last = joins[-1][0]
        reason, cache = self._why_not(last, members, branch, stream)
        weights = {id(t): t for n in members for t in n.inputs
                   if is_param(t) and all(id(c) in branch for c in t.outputs)}
        kind = "parallel" if inner else _kind(members)
        return Block(last.name, kind, stream.name, tuple((a.name, r) for a, r in joins),
                     tuple(n.name for n in members),
                     int(sum(t.values.size for t in weights.values())),
                     int(sum(self.macs.get(n.name, 0) for n in members)), reason is None,
                     reason, cache)

    def parallel(self, add: gs.Node) -> Block | None:
        """``(x + f(x)) + g(x)``: attention and MLP side by side on one normalized stream (an
        Add of three), one block."""
        for r in (1, 0):
            first = add.inputs[1 - r].inputs[0] if add.inputs[1 - r].inputs else None
            if first is None or first.op != "Add" or len(first.inputs) != 2:
                continue
            for q in (1, 0):
                block = self.block(first.inputs[1 - q], [(first, q), (add, r)], inner=(first,))
                if block is not None:
                    return block
        return None

    def layers(self, blocks: list[Block]) -> list[Block]:
        """Each removable block with the removable block that reads its output as its stream
        (attention, then the MLP): one unit; the others as they are."""
        out, used = [], set()
        by_stream = {b.stream: b for b in blocks if b.removable}
        for b in blocks:
            if b.name in used:
                continue
            after = next((by_stream[t] for t in self._same(self.by_name[b.name].outputs[0])
                          if t in by_stream), None) if b.removable else None
            if after is None:
                out.append(b)
                continue
            joins = [(self.by_name[a], r) for a, r in (*b.joins, *after.joins)]
            inner = tuple(self.by_name[n] for n in b.nodes if self.by_name[n].op == "Add"
                          and n in dict(b.joins)) + (self.by_name[b.name],)
            layer = self.block(self.tensor(b.stream), joins, inner=inner)
            if layer is None or not layer.removable:
                out.append(b)
                continue
            out.append(replace(layer, kind="layer"))
            used.add(after.name)
        return out

    @staticmethod
    def _same(t: gs.Tensor) -> list[str]:
        """``t`` and the casts of it (Llama's norms read the stream cast to float32, and the
        residual is the cast)."""
        out, todo = [], [t]
        while todo:
            t = todo.pop()
            out.append(t.name)
            todo += [c.outputs[0] for c in t.outputs if c.op in ("Cast", "Identity")]
        return out

    def tensor(self, name: str) -> gs.Tensor:
        for n in self.nodes:
            for t in (*n.inputs, *n.outputs):
                if t.name == name:
                    return t
        raise KeyError(name)

    def _why_not(self, add: gs.Node, members: list[gs.Node], branch: dict[int, gs.Node],
                 stream: gs.Tensor) -> tuple[str | None, tuple[tuple[str, str], ...]]:
        """Why the branch cannot go (None: it can), and the cache pairs that go with it."""
        cache = []
        for node in members:
            for t in node.outputs:
                if t.name in self.present and self.cache_open:
                    cache.append((self.present[t.name], t.name))
                elif t.name in self.present:
                    return (f"a graph output reads the branch ({t.name}): its key/value cache "
                            "(--prune-kv-cache removes the pair with the block)"), ()
                elif t.name in self.outputs:
                    return f"a graph output reads the branch ({t.name})", ()
                for reader in t.outputs:
                    if id(reader) not in branch and reader is not add:
                        return f"the branch also feeds {reader.name} ({t.name})", ()
        return self._shape(add, stream), tuple(cache)

    @staticmethod
    def _shape(add: gs.Node, stream: gs.Tensor) -> str | None:
        s, y = stream.shape, add.outputs[0].shape
        if s is None or y is None:
            return "the stream's shape is unknown"
        # provably wider: another rank, or a static size the output does not keep (symbolic
        # sizes are taken as kept: verification runs the model at two shapes and would fail
        # otherwise)
        if len(s) != len(y) or any(isinstance(a, int) and a != b and not (
                isinstance(b, str) and a != 1) for a, b in zip(s, y, strict=True)):
            return f"the branch widens the stream ({_dims(s)} -> {_dims(y)})"
        if stream.dtype != add.outputs[0].dtype:
            return "the branch changes the stream's type"
        return None


def _source(t: gs.Tensor) -> gs.Tensor:
    """``t``, or what the flow adapters it comes through read (identity Gathers)."""
    while t.inputs and t.inputs[0].op == "Gather" and t.inputs[0].name.startswith(ADAPTER):
        t = t.inputs[0].inputs[0]
    return t


def _dims(shape) -> str:
    return "x".join(str(d) for d in shape)


def _kind(members: list[gs.Node]) -> str:
    ops = {n.op for n in members}
    if "Softmax" in ops:
        return "attention"
    if ops & {"Conv", "ConvTranspose"}:
        return "conv"
    if ops & {"MatMul", "Gemm", "Einsum"}:
        return "mlp"
    return "residual"


def layers_reading(graph: gs.Graph, readers: set[str]) -> list[gs.Node]:
    """The weighted layers that read a stream through ``readers`` (the nodes that read a
    removed block's output): those nodes, and what follows them through norms, activations and
    reshapes, up to the first weighted layer on each path (never across another residual Add).
    After a block is removed these read a changed stream: compensation refits them."""
    found: dict[str, gs.Node] = {}
    todo = [n for n in graph.nodes if n.name in readers]
    seen: set[int] = set()
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.op in WEIGHTED:
            found[node.name] = node
            continue
        if node.op == "Add" and not any(isinstance(t, gs.Constant) for t in node.inputs):
            continue
        todo += [c for t in node.outputs for c in t.outputs]
    return [n for n in graph.nodes if n.name in found]


def kept_by_components(blocks: list[Block], of_node: Mapping[str, str],
                       kept: set[str]) -> list[Block]:
    """``blocks`` with those in a component that keeps its weights (a named component at
    ratio 0) made not removable, with that reason."""
    out = []
    for b in blocks:
        names = sorted({of_node.get(n) for n in (*b.nodes, b.name)} & kept)
        out.append(replace(b, removable=False, reason=f"component {names[0]} keeps its "
                           "weights (ratio 0)") if b.removable and names else b)
    return out


# -- the oracle's view: a gate per block on its branch --------------------------------------


def with_blocks(analysis: ChannelAnalysis, removed: np.ndarray, blocks: list[Block],
                gone: list[Block]) -> tuple[ChannelAnalysis, np.ndarray]:
    """The analysis with one more unit per block of ``blocks`` (a gate multiplying its branch
    where the Add reads it) and the removal mask with ``gone``'s units set: a model whose
    ``gone`` blocks were removed must equal the gated reference with those gates at zero."""
    n, extra = analysis.num_units, len(blocks)
    gates = tuple(Gate(add, r, 0, np.array([n + i]), batched=False)
                  for i, b in enumerate(blocks) for add, r in b.joins)
    grown = replace(
        analysis, num_units=n + extra,
        unit_group=np.concatenate([analysis.unit_group, np.full(extra, -1)]),
        unit_frozen=np.concatenate([analysis.unit_frozen, np.zeros(extra, bool)]),
        unit_reason=(*analysis.unit_reason, *([None] * extra)),
        gates=analysis.gates + gates)
    names = {b.name for b in gone}
    mask = np.concatenate([removed, [b.name in names for b in blocks]]).astype(bool)
    return grown, mask
