"""Removable blocks: residual branches ``y = x + f(x)`` whose removal leaves ``y = x``.

A block is an ``Add`` of a stream ``x`` and a branch output ``f(x)`` that is computed from ``x``:
the branch is every node that descends from ``x`` and leads to ``f(x)``. It is removable when
nothing but the ``Add`` reads what the branch computes (no other node, no graph output such as a
key/value cache) and the ``Add``'s output has the stream's shape, so the stream can take its
place. This covers pre-norm transformer sub-blocks (LayerNorm or RMSNorm, one op or spelled
out), post-norm ones (``LN(x + f(x))`` becomes ``LN(x)``), layer scale, and CNN blocks with an
identity shortcut (ResNet, MobileNetV2, ConvNeXt). An ``Add`` of two branches (a projection
shortcut) has no stream and is not a block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import onnx_graphsurgeon as gs

from .model import ChannelAnalysis, Gate
from .size import is_param

SHAPE_OPS = ("Shape", "Size")  # read a tensor's shape, not its values
WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum")


@dataclass(frozen=True)
class Block:
    name: str  # the Add node that joins the branch to the stream
    kind: str  # attention, mlp, conv or residual (what the branch computes)
    stream: str  # the tensor the branch reads and the Add passes on without it
    branch: str  # the branch's output (the Add's other input)
    branch_input: int  # which input of the Add the branch is
    nodes: tuple[str, ...]  # the branch's nodes
    params: int  # weights only the branch reads
    macs: int  # the branch's multiply-accumulates per sample
    removable: bool
    reason: str | None = None


def find_blocks(graph: gs.Graph, node_macs: Mapping[str, int] | None = None) -> list[Block]:
    """Every residual branch of ``graph`` (a normalized, named, topologically sorted graph), in
    graph order, each removable or with the reason it is not."""
    nodes = list(graph.nodes)
    order = {id(n): i for i, n in enumerate(nodes)}
    outputs = {t.name for t in graph.outputs}
    blocks = []
    for add in nodes:
        if add.op != "Add" or len(add.inputs) != 2 or any(
                isinstance(t, gs.Constant) for t in add.inputs):
            continue
        for r in (1, 0):  # the branch usually comes second (x + f(x))
            block = _block(add, r, order, outputs, node_macs or {})
            if block is not None:
                blocks.append(block)
                break
    # an Add inside a removable block that is not itself removable (an attention mask added to
    # the scores) is the block's arithmetic, not a block of the model
    inside = {n for b in blocks if b.removable for n in b.nodes}
    return [b for b in blocks if b.removable or b.name not in inside]


def _block(add: gs.Node, r: int, order: dict[int, int], outputs: set[str],
           node_macs: Mapping[str, int]) -> Block | None:
    stream, out = add.inputs[1 - r], add.inputs[r]
    start = order[id(stream.inputs[0])] if stream.inputs else -1
    if not out.inputs or order[id(out.inputs[0])] <= start:
        return None
    # the nodes between the stream and the branch output that lead to the latter ...
    region, todo = {}, [out.inputs[0]]
    while todo:
        node = todo.pop()
        if id(node) in region or order[id(node)] <= start:
            continue
        region[id(node)] = node
        todo += [t.inputs[0] for t in node.inputs if t.inputs]
    # ... and of those, the ones computed from the stream's values: the branch (a shape read
    # off the stream is not its values: a mask sized by it serves every layer)
    branch: dict[int, gs.Node] = {}
    ranked = sorted(region.values(), key=lambda n: order[id(n)])
    for node in ranked:
        if node.op not in SHAPE_OPS and any(
                t is stream or (t.inputs and id(t.inputs[0]) in branch) for t in node.inputs):
            branch[id(node)] = node
    if id(out.inputs[0]) not in branch:
        return None  # the other input does not depend on this one
    if not any(n.op in WEIGHTED and any(isinstance(t, gs.Constant) for t in n.inputs[1:])
               for n in branch.values()):
        return None  # arithmetic on the stream (x + 0.044715 x^3 in a GELU), not a block
    for node in reversed(ranked):  # helpers that serve the branch alone go with it
        if id(node) not in branch and all(
                id(reader) in branch for t in node.outputs for reader in t.outputs) and all(
                t.name not in outputs for t in node.outputs):
            branch[id(node)] = node
    members = sorted(branch.values(), key=lambda n: order[id(n)])
    reason = _why_not(add, out, members, branch, outputs, stream)
    weights = {id(t): t for n in members for t in n.inputs
               if is_param(t) and all(id(c) in branch for c in t.outputs)}
    return Block(add.name, _kind(members), stream.name, out.name, r,
                 tuple(n.name for n in members),
                 int(sum(t.values.size for t in weights.values())),
                 int(sum(node_macs.get(n.name, 0) for n in members)), reason is None, reason)


def _why_not(add: gs.Node, out: gs.Tensor, members: list[gs.Node], branch: dict[int, gs.Node],
             outputs: set[str], stream: gs.Tensor) -> str | None:
    for node in members:
        for t in node.outputs:
            if t.name in outputs:
                return f"a graph output reads the branch ({t.name})"
            for reader in t.outputs:
                if id(reader) not in branch and reader is not add:
                    return f"the branch also feeds {reader.name} ({t.name})"
    s, y = stream.shape, add.outputs[0].shape
    if s is None or y is None:
        return "the stream's shape is unknown"
    # provably wider: another rank, or a static size the output does not keep (symbolic sizes
    # are taken as kept: verification runs the model at two shapes and would fail otherwise)
    if len(s) != len(y) or any(isinstance(a, int) and a != b and not (
            isinstance(b, str) and a != 1) for a, b in zip(s, y, strict=True)):
        return f"the branch widens the stream ({_dims(s)} -> {_dims(y)})"
    if stream.dtype != add.outputs[0].dtype:
        return "the branch changes the stream's type"
    return None


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


# -- the oracle's view: a gate per block on its branch --------------------------------------


def with_blocks(analysis: ChannelAnalysis, removed: np.ndarray, blocks: list[Block],
                gone: list[Block]) -> tuple[ChannelAnalysis, np.ndarray]:
    """The analysis with one more unit per block of ``blocks`` (a gate multiplying its branch
    where the Add reads it) and the removal mask with ``gone``'s units set: a model whose
    ``gone`` blocks were removed must equal the gated reference with those gates at zero."""
    n, extra = analysis.num_units, len(blocks)
    gates = tuple(Gate(b.name, b.branch_input, 0, np.array([n + i]), batched=False)
                  for i, b in enumerate(blocks))
    grown = replace(
        analysis, num_units=n + extra,
        unit_group=np.concatenate([analysis.unit_group, np.full(extra, -1)]),
        unit_frozen=np.concatenate([analysis.unit_frozen, np.zeros(extra, bool)]),
        unit_reason=(*analysis.unit_reason, *([None] * extra)),
        gates=analysis.gates + gates)
    names = {b.name for b in gone}
    mask = np.concatenate([removed, [b.name in names for b in blocks]]).astype(bool)
    return grown, mask
