"""Identical constants stored once: normalization unshares vectors an exporter stored once for
many readers (zero biases that TorchScript deduplicated, so that each reader's channels can go
their own way); those still equal after the cut are shared again before writing, so a pruned
model never stores more than its input did for that reason."""

from __future__ import annotations

import hashlib

import onnx_graphsurgeon as gs


def share_identical_constants(graph: gs.Graph) -> int:
    """Point every reader of a constant at the first constant of the same dtype, shape and
    bytes (top-level node inputs only; graph outputs and subgraph references stay); returns
    how many constants were folded into another."""
    first: dict[tuple, gs.Constant] = {}
    folded: set[str] = set()
    outputs = {t.name for t in graph.outputs}
    for node in graph.nodes:
        for i, t in enumerate(node.inputs):
            if not isinstance(t, gs.Constant) or t.name in outputs:
                continue
            values = t.values
            key = (values.dtype.str, values.shape,
                   hashlib.blake2b(values.tobytes(), digest_size=16).digest())
            keep = first.setdefault(key, t)
            if keep is not t:
                node.inputs[i] = keep
                folded.add(t.name)
    if folded:
        graph.cleanup()
    return len(folded)
