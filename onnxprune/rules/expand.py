"""Expand: broadcasting to a target shape. An axis the data already has in full (size > 1)
keeps its channels whatever the target says there (1 or that size); after removal the target
is set to 1 on such axes so it follows the data. A constant expanded to the batch (a ViT's
class token under a dynamic batch) is claimed by its consumer like any constant."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from .base import OpRule, Rewriter, freeze_all
from .env import Env


def _ranks(node: gs.Node, env: Env) -> tuple[int, int, int] | None:
    """(data rank, target length, output rank), or None when unknown."""
    shape = env.shape(node.inputs[1])
    rd = env.rank(node.inputs[0])
    if rd is None or shape is None or len(shape) != 1 or not isinstance(shape[0], int):
        return None
    return rd, shape[0], max(rd, shape[0])


class Expand(OpRule):
    ops = ("Expand",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        if not env.tracked(x):
            return
        ranks = _ranks(node, env)
        if ranks is None:
            freeze_all(node, env, "target length unknown")
            return
        rd, _, ro = ranks
        for ax, atoms in env.tracked(x).items():
            if atoms.size > 1 and env.dim(x, ax) == atoms.size:
                env.set(node.outputs[0], ax + ro - rd, atoms)
            else:
                env.freeze(atoms, f"Expand {node.name}: channels broadcast on axis {ax}")

    def rewrite(self, node: gs.Node, rw: Rewriter) -> None:
        if node.outputs[0].shape is None or node.inputs[1].shape is None:
            return
        ro, nt = len(node.outputs[0].shape), int(node.inputs[1].shape[0])
        fix = [ax - (ro - nt) for ax in range(ro)
               if rw.keep(node.outputs[0], ax) is not None and ax - (ro - nt) >= 0]
        if not fix:
            return
        rw.set_entries(node, 1, {i: 1 for i in fix})


def expanded_constant(t: gs.Tensor, axis: int, n: int, env: Env) -> tuple[gs.Node, gs.Constant,
                                                                         int] | None:
    """(Expand node, constant, constant axis) when ``t`` is a constant expanded (e.g. to the
    batch) whose ``axis`` (of ``t``) holds the constant's own ``n`` > 1 entries, and ``t`` has
    no other reader; else None."""
    if n <= 1 or len(t.inputs) != 1 or len(t.outputs) != 1 or env.is_output(t):
        return None
    node = t.inputs[0]
    if node.op != "Expand" or not isinstance(node.inputs[0], gs.Constant):
        return None
    ranks = _ranks(node, env)
    if ranks is None:
        return None
    rd, _, ro = ranks
    cax = axis - (ro - rd)
    if cax < 0 or node.inputs[0].values.shape[cax] != n:
        return None
    return node, node.inputs[0], cax
