"""Recurrent layers: ONNX RNN, GRU and LSTM. A hidden unit is a block of rows in W, R and B
(one per gate), a column of R, and a channel of the outputs. The layer mixes its input
channels (gated on X) and its hidden units through R (gated on R's columns, so the oracle
removes a unit's influence on the others)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..ir.graph import input_or_none, shape_of, static_dims, weight_shape
from .base import OpRule, Rewriter, freeze_all
from .env import Env

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


class Recurrent(OpRule):
    ops = ("RNN", "GRU", "LSTM")
    no_macs = None

    def macs(self, node: gs.Node) -> int:
        """Per time step and direction, every gate row of W and R takes one input and hidden
        vector: ``gates x hidden x (input + hidden)``; times the sequence length."""
        w, r = weight_shape(node.inputs[1]), weight_shape(node.inputs[2])
        x = static_dims(shape_of(node.inputs[0]))
        if w is None or r is None or x is None or len(x) != 3:
            return 0
        steps = x[1] if int(node.attrs.get("layout", 0)) else x[0]
        return steps * w[0] * w[1] * (w[2] + r[2])

    def data_rank(self, node: onnx.NodeProto, ranks: dict[str, int]) -> int | None:
        return 3

    def propagate(self, node: gs.Node, env: Env) -> None:
        x, w, r = node.inputs[0], node.inputs[1], node.inputs[2]
        b = input_or_none(node, 3)
        consts = [w, r] + ([b] if b is not None else [])
        if not all(isinstance(t, gs.Constant) for t in consts) or input_or_none(node, 4):
            freeze_all(node, env, "weights are not constants or sequence lengths are given")
            return
        for i in (5, 6):  # initial_h / initial_c: only zeros or absent are removable
            init = input_or_none(node, i)
            if init is not None and not (isinstance(init, gs.Constant)
                                         and not np.any(init.values)):
                freeze_all(node, env, "initial state is not a constant zero")
                return
        gates = GATES[node.op]
        hidden = int(node.attrs.get("hidden_size", r.values.shape[-1]))
        x_axis = 2  # X [T, B, I], or [B, T, I] with layout 1
        for ax, atoms in env.tracked(x).items():
            if ax != x_axis:
                env.freeze(atoms, f"{node.op} {node.name}: sequence or batch axis {ax} is tracked")
        if env.get(x, x_axis) is not None:
            env.claim(node, w, 2, env.get(x, x_axis))
            env.gate(node, 0, x_axis)
        units = env.fresh(hidden)
        env.claim(node, w, 1, np.tile(units, gates))
        env.claim(node, r, 1, np.tile(units, gates))
        env.claim(node, r, 2, units)
        env.gate(node, 2, 2, atoms=units, batched=False)  # R's columns: a unit's influence
        if b is not None:
            env.claim(node, b, 1, np.tile(units, 2 * gates))
        peep = input_or_none(node, 7) if node.op == "LSTM" else None
        if peep is not None:
            if not isinstance(peep, gs.Constant):
                env.freeze(units, f"LSTM {node.name}: peepholes are not constants")
            else:
                env.claim(node, peep, 1, np.tile(units, 3))
        for i in (5, 6):
            init = input_or_none(node, i)
            if init is not None:
                env.claim(node, init, 2, units)
        # Y [T, dirs, B, H] (layout 1: [B, T, dirs, H]); Y_h, Y_c [dirs, B, H] ([B, dirs, H])
        for out, axis in zip(node.outputs, (3, 2, 2), strict=False):
            if not (isinstance(out, gs.Variable) and out.is_empty()):
                env.set(out, axis, units)

    def rewrite(self, node: gs.Node, rw: Rewriter) -> None:
        for out, axis in zip(node.outputs, (3, 2, 2), strict=False):
            keep = rw.keep(out, axis)
            if keep is not None:
                node.attrs["hidden_size"] = int(keep.sum())
                return
