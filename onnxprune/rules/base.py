"""The op-rule contract.

A rule says, for one node, how tracked channel axes map from inputs to outputs, which
parameter slices belong to which channel, where channels are mixed (gates), and how to fix
the node's attributes or constant inputs once channels are removed. A node whose op has no
rule freezes every channel that touches it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..ir.graph import const_value, new_constant, unique_name
from .env import Env
from .layers import Layer

Keep = Callable[[gs.Tensor, int], "np.ndarray | None"]


class Rewriter:
    """What a rule may do while channels are removed."""

    def __init__(self, graph: gs.Graph, keep: Keep):
        self.graph = graph
        self.keep = keep

    def set_const_input(self, node: gs.Node, index: int, values: np.ndarray) -> None:
        """Give ``node`` its own new constant at ``index`` (constants may be shared)."""
        hint = f"{node.name}_in{index}" if node.name else f"onnxprune_in{index}"
        node.inputs[index] = new_constant(self.graph, hint, np.asarray(values))

    def set_entries(self, node: gs.Node, index: int, entries: dict[int, int]) -> None:
        """Set entries of the 1-D int64 input at ``index`` (a shape: Reshape's or Expand's
        target). A constant gets a new constant; a computed one becomes ``target * m + v``,
        with ``m`` 0 and ``v`` the new value on the entries, so its other entries keep
        following the input sizes."""
        target = node.inputs[index]
        value = const_value(target)
        if value is not None:
            values = np.array(value, dtype=np.int64).ravel()
            for i, v in entries.items():
                values[i] = v
            self.set_const_input(node, index, values)
            return
        n = int(target.shape[0])
        m, v = np.ones(n, np.int64), np.zeros(n, np.int64)
        for i, new in entries.items():
            m[i], v[i] = 0, new
        g, hint = self.graph, node.name or node.op.lower()
        scaled = g.layer(op="Mul", name=unique_name(g, f"{hint}_follow_mul"),
                         inputs=[target, new_constant(g, f"{hint}_follow_keep", m)],
                         outputs=[gs.Variable(unique_name(g, f"{hint}_target_kept"), np.int64,
                                              [n])])[0]
        node.inputs[index] = g.layer(op="Add", name=unique_name(g, f"{hint}_follow_add"),
                                     inputs=[scaled, new_constant(g, f"{hint}_follow_set", v)],
                                     outputs=[gs.Variable(unique_name(g, f"{hint}_target"),
                                                          np.int64, [n])])[0]


class OpRule:
    """Base class; ``ops`` lists the op types (default domain) the rule covers.

    Everything the project knows about an op sits here, as hooks: how channels propagate,
    how the node is fixed after removal, how many multiply-accumulates it costs, how the mask
    oracle gates its statistics, how its weight reads as a matrix (``layer``), and whether the
    torch interpreter can run it. A rule that leaves a hook at its default says why
    (``no_macs``, ``no_layer``, ``no_lowering``); a registry test checks that every rule does
    one or the other."""

    ops: tuple[str, ...] = ()
    domain: str = ""  # the ops' domain ("" the default; onnxruntime's contrib ops: com.microsoft)
    # why the MAC count is 0 (None: the rule counts them in ``macs``)
    no_macs: str | None = "not a multiply-accumulate layer (MAC counters leave it out)"
    # op type -> why the torch interpreter has no lowering for it (used by distillation)
    no_lowering: dict[str, str] = {}
    # the rule records "stats" gates (statistics over channels) and rebuilds them in
    # ``stats_gate`` for the oracle
    gates_stats: bool = False
    # why the op is no weighted layer a refit can see as a matrix product (None: ``layer``)
    no_layer: str | None = "not a layer with a weight matrix"

    def propagate(self, node: gs.Node, env: Env) -> None:
        raise NotImplementedError

    def rewrite(self, node: gs.Node, rw: Rewriter) -> None:
        """Fix attributes/constant inputs after removal. Parameters are sliced elsewhere."""

    def macs(self, node: gs.Node) -> int:
        """Multiply-accumulates per sample (symbolic dimensions count as 1)."""
        return 0

    def data_rank(self, node: onnx.NodeProto, ranks: dict[str, int]) -> int | None:
        """The rank of the gated data input when shape inference could not tell it."""
        return None

    def scale_outputs(self, node: gs.Node, scale: np.ndarray) -> np.ndarray | None:
        """Its constant weight with output channel ``c`` scaled by ``scale[c]`` (float64; any
        groups), what folding a per-channel affine after it takes; None where it has none."""
        return None

    def layer(self, node: gs.Node) -> Layer | None:
        """The node as a matrix product with a constant weight (``rules/layers.py``), or None
        where this one is not (a weight computed at run time, groups, ``transA``)."""
        return None

    def stats_gate(self, node: onnx.NodeProto, p: str, q: str, rank: int, elem: int,
                   opset: int) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto]]:
        """For the oracle: constants and nodes that replace ``node`` with one whose statistics
        over the channels are weighted by the gates ``{p}_c`` (closed channels count as
        absent). Only rules with ``gates_stats``."""
        raise NotImplementedError(f"{type(self).__name__} records no statistics gates")


def freeze_all(node: gs.Node, env: Env, why: str) -> None:
    env.freeze_inputs(node, f"{node.op} {node.name}: {why}")


class FreezeRule(OpRule):
    """Used for ops without a rule: channels touching them stay."""

    def propagate(self, node: gs.Node, env: Env) -> None:
        freeze_all(node, env, f"no channel rule for op {node.op}")


def attr_or_input_ints(node: gs.Node, env: Env | None, attr: str, index: int
                       ) -> list[int] | None:
    """An int list given as an attribute (older opsets) or as a constant input (newer)."""
    if attr in node.attrs and node.attrs[attr] is not None:
        return [int(v) for v in np.asarray(node.attrs[attr]).ravel()]
    if index < len(node.inputs):
        value = const_value(node.inputs[index])
        if value is not None:
            return [int(v) for v in np.asarray(value).ravel()]
        if not (isinstance(node.inputs[index], gs.Variable) and node.inputs[index].is_empty()):
            return None  # a dynamic input: unknown
    return []
