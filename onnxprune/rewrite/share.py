"""Identical constants stored once: normalization unshares vectors an exporter stored once for
many readers (zero biases that TorchScript deduplicated, so that each reader's channels can go
their own way); those still equal after the cut are shared again before writing, so a pruned
model never stores more than its input did for that reason."""

from __future__ import annotations

import hashlib

import onnx_graphsurgeon as gs


def share_identical_constants(graph: gs.Graph, branches_only: bool = False) -> int:
    """Point every reader of a constant at the first constant of the same dtype, shape and
    bytes, in the graph and in its If/Loop/Scan bodies (where folding a computation both
    branches make on one weight gives each its own copy); graph outputs stay. Returns how
    many constants were folded into another. ``branches_only``: only constants read inside
    bodies (what folding copied; equal weights of the graph itself may be cut apart)."""
    first: dict[tuple, gs.Constant] = {}
    folded: set[int] = set()
    _share(graph, first, folded, not branches_only)
    if folded:
        graph.cleanup()
    return len(folded)


def _share(graph: gs.Graph, first: dict[tuple, gs.Constant], folded: set[int],
           here: bool = True) -> None:
    outputs = {id(t) for t in graph.outputs}
    for node in graph.nodes:
        for i, t in enumerate(node.inputs):
            if not here or not isinstance(t, gs.Constant) or id(t) in outputs:
                continue
            values = t.values
            key = (values.dtype.str, values.shape,
                   hashlib.blake2b(values.tobytes(), digest_size=16).digest())
            keep = first.setdefault(key, t)
            if keep is not t:
                node.inputs[i] = keep
                folded.add(id(t))
        for sub in node.subgraphs():
            _share(sub, first, folded, True)
