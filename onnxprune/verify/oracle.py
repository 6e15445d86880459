"""The mask oracle: the reference graph with a gate multiplying every mixed channel.

Gates are one graph input (a vector with one entry per unit), gathered per gate point, so any
candidate mask is one onnxruntime run in one session. A physically pruned model must equal
the gated reference with the removed units' gates at zero.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import interrupts
from ..analysis.model import ChannelAnalysis
from ..ir.runtime import session
from ..ir.weights import Skeleton, embed
from ..rules import default_registry

GATES = "onnxprune_gates"


def build_gated_model(reference: onnx.ModelProto | Skeleton, analysis: ChannelAnalysis,
                      inplace: bool = False) -> onnx.ModelProto | Skeleton:
    """The reference with a gate input of shape [G, units]: G = 1 gates the whole batch with
    one mask; G = batch gives every sample its own mask (when every gated tensor is batch-first).
    ``inplace`` edits ``reference`` itself (no copy of the weights); a skeleton's arrays are
    shared either way."""
    if isinstance(reference, Skeleton):
        return Skeleton(build_gated_model(reference.model, analysis, inplace), reference.arrays)
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
    registry = default_registry()
    for i, gate in enumerate(analysis.gates):
        node = nodes[gate.node]
        x = node.input[gate.input_index]
        rule = registry.lookup(node.op_type, node.domain)
        rank = ranks.get(x, rule.data_rank(node, ranks))
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
        if gate.kind == "stats":  # the rule rebuilds the node with gate-weighted statistics
            consts, rebuilt = rule.stats_gate(node, p, q, rank, elem, opset)
            g.initializer.extend(consts)
            new_nodes[node.name].extend(rebuilt)
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

    def __init__(self, reference: onnx.ModelProto | Skeleton, analysis: ChannelAnalysis,
                 inplace: bool = False, threads: int | None = None, search: bool = False):
        """``search``: candidates run at many batch sizes (from the arena the search's
        sessions share, ``ir.arena``: a session's own would keep a chunk of memory per size)
        in this process and in pool workers at other thread counts (weights as initializers:
        the same bits at any count)."""
        self.analysis = analysis
        self.model = build_gated_model(reference, analysis, inplace)
        self.session = session(self.model, threads=threads, arena="shared" if search else True,
                               feed_weights=not search, quiet=search)  # (errors still raise)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray], keep: np.ndarray | None = None) -> list[np.ndarray]:
        """Outputs with one gate vector (or a [G, units] array) applied."""
        n = self.analysis.num_units
        gates = np.ones((1, n), dtype=np.float32)
        if keep is not None and n:
            gates = np.asarray(keep, dtype=np.float32).reshape(-1, n)
        return self.session.run(self.output_names, {**feeds, GATES: gates},
                                interrupts.run_options())

    def baked(self, keep: np.ndarray) -> onnx.ModelProto:
        """A standalone model: the gated reference with these gates as a constant."""
        gated = self.model
        model = onnx.ModelProto()
        model.CopyFrom(gated.model if isinstance(gated, Skeleton) else gated)
        inputs = [i for i in model.graph.input if i.name != GATES]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
        gates = np.asarray(keep, np.float32).reshape(1, -1)
        model.graph.initializer.append(numpy_helper.from_array(gates, GATES))
        return embed(Skeleton(model, gated.arrays)) if isinstance(gated, Skeleton) else model

    @property
    def per_sample(self) -> bool:
        """Whether every gated tensor is batch-first, so rows of gates can differ per sample."""
        return all(gate.axis > 0 and gate.batched for gate in self.analysis.gates)
