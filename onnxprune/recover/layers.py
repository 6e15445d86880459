"""The layers a refit can read: where a gate feeds a layer its rule views as a matrix product
(``rules/layers.py``), and their data inputs on calibration data, fetched a few layers per
run."""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from ..analysis.model import ChannelAnalysis, Gate
from ..rules import layer_of
from .compensate import fetched, within_cap


def layer_gates(graph: gs.Graph, analysis: ChannelAnalysis) -> list[tuple[Gate, gs.Node]]:
    """Gates at the data input of a layer whose weight is a constant we can read."""
    nodes = {n.name: n for n in graph.nodes}
    out = []
    for gate in analysis.gates:
        node = nodes.get(gate.node)
        if node is None or not gate.batched or gate.input_index != 0:
            continue
        view = layer_of(node)
        # channels first: the gate must be on axis 1; channels last: the readers check it
        if view is None or (not view.channels_last and gate.axis != 1):
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
