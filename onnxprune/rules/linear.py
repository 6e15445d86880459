"""Gemm and MatMul with a constant weight: they mix input features and create output features."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..analysis.env import Env
from ..graph import input_or_none
from .base import OpRule, freeze_all


class Gemm(OpRule):
    """Y = alpha * A' B' + beta * C, A' = A or A^T, B' = B or B^T; B constant."""

    ops = ("Gemm",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
        c = input_or_none(node, 2)
        if not isinstance(b, gs.Constant):
            freeze_all(node, env, "B is not a constant weight")
            return
        trans_a = int(node.attrs.get("transA", 0))
        trans_b = int(node.attrs.get("transB", 0))
        k_ax, n_ax = (1, 0) if trans_b else (0, 1)
        a_in, a_rows = (0, 1) if trans_a else (1, 0)
        if env.get(a, a_rows) is not None:
            env.freeze(env.get(a, a_rows), f"Gemm {node.name}: rows of A are tracked")
        if env.get(a, a_in) is not None:
            env.claim(node, b, k_ax, env.get(a, a_in))
            env.gate(node, 0, a_in)
        out = env.fresh(b.values.shape[n_ax])
        env.claim(node, b, n_ax, out)
        if c is not None:
            _bias(node, env, c, out)
        env.set(y, 1, out)


def _bias(node: gs.Node, env: Env, c: gs.Tensor, out) -> None:
    n = len(out)
    shape = env.shape(c)
    if shape is None:
        env.freeze(out, f"{node.op} {node.name}: bias shape unknown")
        return
    if not shape or shape[-1] == 1 and n > 1:
        return  # scalar or broadcast along the features
    last = len(shape) - 1
    if shape[-1] != n:
        env.freeze(out, f"{node.op} {node.name}: bias does not match the features")
    elif isinstance(c, gs.Constant):
        env.claim(node, c, last, out)
    elif env.get(c, last) is not None:
        env.union(out, env.get(c, last))
    else:
        env.freeze(out, f"{node.op} {node.name}: bias {c.name} has no channel map")


class MatMul(OpRule):
    """A[..., K] @ W[K, N] with W a 2-D constant (a Linear layer without bias)."""

    ops = ("MatMul",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        a, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
        rank = env.rank(a)
        if not isinstance(w, gs.Constant) or w.values.ndim != 2 or rank is None or rank < 2:
            freeze_all(node, env, "not an activation times a 2-D constant weight")
            return
        last = rank - 1
        for ax, atoms in env.tracked(a).items():
            if ax != last:  # rows and batch axes are independent
                env.set(y, ax, atoms)
        if env.get(a, last) is not None:
            env.claim(node, w, 0, env.get(a, last))
            env.gate(node, 0, last)
        out = env.fresh(w.values.shape[1])
        env.claim(node, w, 1, out)
        env.set(y, last, out)
