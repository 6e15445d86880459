"""The mask oracle: the reference graph with a gate multiplying every mixed channel.

Gates are one graph input (a vector with one entry per unit), gathered per gate point, so any
candidate mask is one onnxruntime run in one session. A physically pruned model must equal
the gated reference with the removed units' gates at zero.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..analysis.model import ChannelAnalysis
from ..ir.runtime import session

GATES = "onnxprune_gates"


def build_gated_model(reference: onnx.ModelProto, analysis: ChannelAnalysis,
                      inplace: bool = False) -> onnx.ModelProto:
    """The reference with a gate input of shape [G, units]: G = 1 gates the whole batch with
    one mask; G = batch gives every sample its own mask (when every gated tensor is batch-first).
    ``inplace`` edits ``reference`` itself (no copy of the weights)."""
    model = reference
    if not inplace:
        model = onnx.ModelProto()
        model.CopyFrom(reference)
    g = model.graph
    ranks = _ranks(model)
    nodes = {n.name: n for n in g.node}
    g.input.append(helper.make_tensor_value_info(GATES, TensorProto.FLOAT,
                                                 ["gate_rows", analysis.num_units]))
    new_nodes: dict[str, list[onnx.NodeProto]] = {}
    replaced: set[str] = set()  # nodes rebuilt with gate-weighted statistics
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    for i, gate in enumerate(analysis.gates):
        node = nodes[gate.node]
        x = node.input[gate.input_index]
        rank = ranks.get(x, _rank_from_layer(node, ranks))
        if rank is None:
            raise ValueError(f"oracle: rank of {x} unknown (gate for {gate.node})")
        shape = [1] * rank
        shape[gate.axis] = gate.units.size
        if gate.axis > 0 and gate.batched:
            shape[0] = -1  # the gate rows: 1, or one per sample
        p = f"onnxprune_gate{i}"
        g.initializer.append(numpy_helper.from_array(gate.units.astype(np.int64), p + "_idx"))
        g.initializer.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), p + "_shape"))
        elem = _elem_type(model, x)
        q = f"{node.name}/{p}"  # gates carry their layer's name scope
        new_nodes.setdefault(node.name, []).extend([
            helper.make_node("Gather", [GATES, p + "_idx"], [p + "_g"], axis=1,
                             name=q + "_gather"),
            helper.make_node("Reshape", [p + "_g", p + "_shape"], [p + "_r"], name=q + "_reshape"),
            helper.make_node("Cast", [p + "_r"], [p + "_c"], to=elem, name=q + "_cast"),
        ])
        if gate.kind == "stats":
            g.initializer.extend(_stats_constants(p, node, rank, elem, opset))
            build = _weighted_mean if node.op_type == "ReduceMean" else _weighted_layernorm
            new_nodes[node.name].extend(build(node, p, q, opset))
            replaced.add(node.name)
            continue
        new_nodes[node.name].append(
            helper.make_node("Mul", [x, p + "_c"], [p + "_y"], name=q + "_mul"))
        node.input[gate.input_index] = p + "_y"
        ranks[p + "_y"] = rank  # a second gate on this input (two reduced axes) chains on it
    ordered = []
    for n in g.node:
        ordered.extend(new_nodes.get(n.name, []))
        if n.name not in replaced:
            ordered.append(n)
    del g.node[:]
    g.node.extend(ordered)
    return model


def _stats_constants(p: str, node: onnx.NodeProto, rank: int, elem: int,
                     opset: int) -> list[onnx.TensorProto]:
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
    if node.op_type == "ReduceMean":
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
        if axes is None and not (len(node.input) > 1 and node.input[1]):
            axes = list(range(rank))  # (with an axes input, the node's own is reused)
    else:
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        axes = list(range(axis % rank, rank))
    out = [numpy_helper.from_array(np.array(1e-12, dtype), p + "_tiny")]
    if node.op_type == "LayerNormalization":
        out.append(numpy_helper.from_array(np.array(eps, dtype), p + "_eps"))
    if axes is not None:
        out.append(numpy_helper.from_array(np.array(axes, np.int64), p + "_axes"))
    return out


def _reduce_sum(x: str, y: str, node: onnx.NodeProto, p: str, name: str,
                opset: int) -> onnx.NodeProto:
    """ReduceSum over the stats node's axes (its own axes input when it has one), keepdims as
    the node (LayerNormalization keeps them)."""
    keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
    own = node.op_type == "ReduceMean" and len(node.input) > 1 and node.input[1]
    axes = node.input[1] if own else p + "_axes"
    if opset >= 13:
        return helper.make_node("ReduceSum", [x, axes], [y], name=name, keepdims=keep)
    attr_axes = next(a.ints for a in node.attribute if a.name == "axes") \
        if any(a.name == "axes" for a in node.attribute) else None
    kw = {"axes": list(attr_axes)} if attr_axes is not None else {}
    return helper.make_node("ReduceSum", [x], [y], name=name, keepdims=keep, **kw)


def _weighted_mean(node: onnx.NodeProto, p: str, q: str, opset: int,
                   y: str | None = None) -> list[onnx.NodeProto]:
    """The mean over the stats node's axes with channels weighted by the gates ``p_c`` (so,
    the mean over kept ones), written to ``y`` (default: the node's output); the expanded
    weights are left in ``p_w`` and their sum in ``p_n``."""
    x, y = node.input[0], y or node.output[0]
    return [
        helper.make_node("Shape", [x], [p + "_xs"], name=q + "_xs"),
        helper.make_node("Expand", [p + "_c", p + "_xs"], [p + "_w"], name=q + "_w"),
        _reduce_sum(p + "_w", p + "_n0", node, p, q + "_n0", opset),
        helper.make_node("Max", [p + "_n0", p + "_tiny"], [p + "_n"], name=q + "_n"),
        helper.make_node("Mul", [x, p + "_w"], [p + "_wx"], name=q + "_wx"),
        _reduce_sum(p + "_wx", p + "_sx", node, p, q + "_sx", opset),
        helper.make_node("Div", [p + "_sx", p + "_n"], [y], name=q + "_mean"),
    ]


def _weighted_layernorm(node: onnx.NodeProto, p: str, q: str,
                        opset: int) -> list[onnx.NodeProto]:
    """LayerNormalization with statistics weighted by the gates ``p_c`` (broadcast over the
    other normalized axes): closed channels count as absent, as in the pruned node."""
    x, y = node.input[0], node.output[0]
    scale = node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None

    def mk(op, ins, out, **kw):
        return helper.make_node(op, ins, [p + out], name=f"{q}_{out.lstrip('_')}", **kw)

    nodes = _weighted_mean(node, p, q, opset, p + "_mean") + [
        mk("Sub", [x, p + "_mean"], "_d"),
        mk("Mul", [p + "_d", p + "_d"], "_d2"),
        mk("Mul", [p + "_d2", p + "_w"], "_wd2"),
        _reduce_sum(p + "_wd2", p + "_sv", node, p, q + "_sv", opset),
        mk("Div", [p + "_sv", p + "_n"], "_var"),
        mk("Add", [p + "_var", p + "_eps"], "_ve"),
        mk("Sqrt", [p + "_ve"], "_std"),
        mk("Div", [p + "_d", p + "_std"], "_z"),
    ]
    if bias is None:
        nodes.append(helper.make_node("Mul", [p + "_z", scale], [y], name=q + "_scale"))
    else:
        nodes.append(mk("Mul", [p + "_z", scale], "_zs"))
        nodes.append(helper.make_node("Add", [p + "_zs", bias], [y], name=q + "_bias"))
    return nodes


def _rank_from_layer(node: onnx.NodeProto, ranks: dict[str, int]) -> int | None:
    """The rank of a layer's data input when shape inference could not tell it."""
    if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
        return ranks.get(node.input[1])  # the weight has the data's rank
    if node.op_type == "Gemm":
        return 2
    if node.op_type in ("RNN", "GRU", "LSTM"):
        return 3
    return None


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    ranks = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if vi.type.tensor_type.HasField("shape"):
            ranks[vi.name] = len(vi.type.tensor_type.shape.dim)
    for init in model.graph.initializer:
        ranks[init.name] = len(init.dims)
    return ranks


def _elem_type(model: onnx.ModelProto, name: str) -> int:
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if vi.name == name and vi.type.tensor_type.elem_type:
            return vi.type.tensor_type.elem_type
    return TensorProto.FLOAT


class Oracle:
    """One session over the gated reference; ``run`` evaluates any unit mask."""

    def __init__(self, reference: onnx.ModelProto, analysis: ChannelAnalysis,
                 inplace: bool = False, threads: int | None = None):
        self.analysis = analysis
        self.model = build_gated_model(reference, analysis, inplace)
        self.session = session(self.model, threads=threads)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray], keep: np.ndarray | None = None) -> list[np.ndarray]:
        """Outputs with one gate vector (or a [G, units] array) applied."""
        n = self.analysis.num_units
        gates = np.ones((1, n), dtype=np.float32)
        if keep is not None and n:
            gates = np.asarray(keep, dtype=np.float32).reshape(-1, n)
        return self.session.run(self.output_names, {**feeds, GATES: gates})

    def baked(self, keep: np.ndarray) -> onnx.ModelProto:
        """A standalone model: the gated reference with these gates as a constant."""
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        inputs = [i for i in model.graph.input if i.name != GATES]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
        gates = np.asarray(keep, np.float32).reshape(1, -1)
        model.graph.initializer.append(numpy_helper.from_array(gates, GATES))
        return model

    @property
    def per_sample(self) -> bool:
        """Whether every gated tensor is batch-first, so rows of gates can differ per sample."""
        return all(gate.axis > 0 and gate.batched for gate in self.analysis.gates)
