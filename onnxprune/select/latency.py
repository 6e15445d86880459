"""Latency-aware rounding (``--round-to auto``): measure how the latency of the model's main
layer steps with its channel count on the target provider, and pick the largest multiple that
keeps extra channels for free (rounding up to it costs at most ``max_increase`` latency)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ..analysis.size import node_macs
from ..bench.on_device import session_options
from ..progress import task
from ..rules import layer_of

MULTIPLES = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class RoundingProbe:
    layer: str
    widths: tuple[int, ...]
    latency_ms: tuple[float, ...]
    cost: dict[int, float]  # multiple -> mean latency ratio of rounding up to it
    choice: int


def _layer(graph: gs.Graph) -> gs.Node | None:
    """The Conv (group 1) or Gemm/MatMul with a constant weight that does the most work."""
    layers = [n for n in graph.nodes if n.op in ("Conv", "Gemm", "MatMul")
              and layer_of(n) is not None and n.inputs[0].shape is not None]
    return max(layers, key=node_macs, default=None)


def _probe_model(node: gs.Node, width: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    shape = [1 if not isinstance(d, int) else d for d in node.inputs[0].shape]
    w = node.inputs[1].values
    if node.op == "Conv":
        weight = rng.standard_normal((width, *w.shape[1:])).astype(np.float32)
        attrs = {k: v for k, v in node.attrs.items() if k in ("kernel_shape", "strides", "pads",
                                                                "dilations", "auto_pad")}
        op = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    else:  # Gemm or MatMul: vary the output features
        k = shape[-1]
        weight = rng.standard_normal((k, width)).astype(np.float32)
        op = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph([op], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def probe_round_to(graph: gs.Graph, provider: str = "CPUExecutionProvider", span: int = 16,
                   rounds: int = 15, max_increase: float = 0.02) -> RoundingProbe | None:
    node = _layer(graph)
    if node is None:
        return None
    # its output features (a Gemm with transB, as torch's Linear exports, holds them first)
    full = int(node.inputs[1].values.shape[layer_of(node).weight_out_axis()])
    base = max(full // 2, span + 1)
    widths = list(range(base - span, base + 2 * span + 1))
    x = np.random.default_rng(1).standard_normal(
        [1 if not isinstance(d, int) else d for d in node.inputs[0].shape]).astype(np.float32)
    # sessions that sleep between runs: the widths run interleaved
    sessions = [ort.InferenceSession(_probe_model(node, w).SerializeToString(),
                                     session_options(), providers=[provider]) for w in widths]
    times = [[] for _ in widths]
    with task("latency probe", rounds) as advance:
        for r in range(rounds + 2):
            for i, s in enumerate(sessions):  # interleaved so drift hits every width alike
                t = time.perf_counter()
                s.run(None, {"x": x})
                if r >= 2:
                    times[i].append(time.perf_counter() - t)
            advance()
    lat = {w: float(np.median(t)) * 1e3 for w, t in zip(widths, times, strict=True)}
    cost = {}
    probe_widths = [w for w in widths if w <= base + span]
    for m in MULTIPLES:
        ratios = [lat[-(-w // m) * m] / lat[w] for w in probe_widths if -(-w // m) * m in lat]
        cost[m] = float(np.mean(ratios))
    choice = max(m for m in MULTIPLES if cost[m] <= 1.0 + max_increase)
    return RoundingProbe(node.name, tuple(widths), tuple(lat[w] for w in widths), cost, choice)
