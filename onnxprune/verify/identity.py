"""Whether the normalized graph is the input model itself, node for node.

When no normalization step changed the graph, what remains between the input model and the
graph the oracle gates is onnx-graphsurgeon's import and export. If that round trip gives back
the same nodes (op, domain, inputs, outputs, attributes), the same graph inputs and outputs and
the same initializers (the same arrays, or the same bytes), both compute the same function in
onnxruntime's reference arithmetic (in whichever topological order the nodes come), and running the input model again proves nothing more. Any
difference (a reordered node, a tensor re-encoded, a changed attribute) leaves the numerical
comparison to verification.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..ir.weights import Skeleton


def _node_key(node: onnx.NodeProto) -> tuple:
    attrs = tuple(sorted(a.SerializeToString(deterministic=True) for a in node.attribute))
    return node.op_type, node.domain, tuple(node.input), tuple(node.output), attrs


def _io(values) -> list[tuple[str, int]]:
    return [(v.name, v.type.tensor_type.elem_type if v.type.HasField("tensor_type") else -1)
            for v in values]


def same_model(a: Skeleton, b: Skeleton) -> bool:
    """``a`` and ``b`` compute the same thing by construction (see the module's rule)."""
    ga, gb = a.model.graph, b.model.graph
    if (len(ga.node) != len(gb.node) or _io(ga.output) != _io(gb.output)
            or {o.domain: o.version for o in a.model.opset_import}
            != {o.domain: o.version for o in b.model.opset_import}
            or list(a.model.functions) != list(b.model.functions)):
        return False
    inits_a = {t.name: t for t in ga.initializer}
    inits_b = {t.name: t for t in gb.initializer}
    feeds = lambda g, inits: sorted(x for x in _io(g.input) if x[0] not in inits)  # noqa: E731
    if inits_a.keys() != inits_b.keys() or feeds(ga, inits_a) != feeds(gb, inits_b):
        return False
    # the same nodes, in either topological order
    if sorted(map(_node_key, ga.node)) != sorted(map(_node_key, gb.node)):
        return False
    for name, ta in inits_a.items():
        xa, xb = a.arrays.get(name), b.arrays.get(name)
        if xa is not None and xb is not None:
            if xa is not xb and not (xa.dtype == xb.dtype and xa.shape == xb.shape
                                     and np.array_equal(xa, xb)):
                return False
        elif xa is not None or xb is not None:
            return False
        elif ta.SerializeToString(deterministic=True) != inits_b[name].SerializeToString(
                deterministic=True):
            return False
    return True
