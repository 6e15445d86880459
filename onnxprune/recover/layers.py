"""The layers a refit can read: where a gate feeds a Conv/ConvTranspose/Gemm/MatMul with a
constant weight, and their data inputs on calibration data, fetched a few layers per run."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..analysis.model import ChannelAnalysis, Gate
from .compensate import activations

FETCH_BYTES = 512 * 2**20  # activations fetched per run of the model (bounds memory)


def layer_gates(graph: gs.Graph, analysis: ChannelAnalysis) -> list[tuple[Gate, gs.Node]]:
    """Gates at the data input of a layer whose weight is a constant we can read."""
    nodes = {n.name: n for n in graph.nodes}
    out = []
    for gate in analysis.gates:
        node = nodes.get(gate.node)
        if node is None or not gate.batched or gate.input_index != 0 or len(node.inputs) < 2:
            continue
        w = node.inputs[1]
        if not isinstance(w, gs.Constant) or node.op not in ("Conv", "ConvTranspose", "Gemm",
                                                              "MatMul"):
            continue
        if node.op in ("Conv", "ConvTranspose") and (int(node.attrs.get("group", 1)) != 1
                                                      or gate.axis != 1):
            continue
        if node.op == "Gemm" and (int(node.attrs.get("transA", 0)) or gate.axis != 1):
            continue
        if node.op == "MatMul" and np.ndim(w.values) != 2:
            continue
        out.append((gate, node))
    return out


def layer_inputs(reference: onnx.ModelProto, pairs: list[tuple[Gate, gs.Node]], calib):
    """(gate, node, the node's data input on ``calib``) for each pair, fetched for a few
    layers per run of ``reference`` (as many as ``FETCH_BYTES`` holds)."""
    lo, per_run = 0, 8
    while lo < len(pairs):
        part = pairs[lo:lo + per_run]
        lo += len(part)
        names = list(dict.fromkeys(node.inputs[0].name for _, node in part))
        acts = activations(reference, names, calib)
        size = sum(a.nbytes for a in acts.values()) / max(len(acts), 1)
        per_run = max(1, int(FETCH_BYTES // max(size, 1)))  # as many as fit the budget
        for gate, node in part:
            yield gate, node, acts[node.inputs[0].name]
        del acts
