"""The layers a refit can read: where a gate feeds a Conv/ConvTranspose/Gemm/MatMul with a
constant weight, and their data inputs on calibration data, fetched a few layers per run."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..analysis.model import ChannelAnalysis, Gate
from .compensate import fetched, within_cap


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
    layers per run of ``reference`` (``compensate.fetched``); under a memory cap, on as many
    samples of ``calib`` as fit (``compensate.within_cap``)."""
    names = [node.inputs[0].name for _, node in pairs]
    inputs = fetched(reference, names, within_cap(reference, names, calib))
    for (gate, node), (_, x) in zip(pairs, inputs, strict=True):
        yield gate, node, x
