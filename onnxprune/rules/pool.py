"""Pooling and reductions: channels pass through the axes that stay. A sum-like reduction
over channels (sum, sum of squares, L1, L2) is gated like a layer that mixes them; a mean over
channels is exact as a mean over the kept ones (a ``stats`` gate); other reductions over
channels freeze them."""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from ..ir.graph import normalize_axis
from .base import OpRule, attr_or_input_ints, freeze_all
from .env import Env
from .gating import stats_constants, weighted_mean


class Pool(OpRule):
    """Pools work per sample and channel over the spatial axes (>= 2)."""

    ops = ("MaxPool", "AveragePool", "LpPool", "GlobalMaxPool", "GlobalLpPool")

    def propagate(self, node: gs.Node, env: Env) -> None:
        if len(node.outputs) > 1 and node.outputs[1].outputs:
            freeze_all(node, env, "MaxPool indices depend on the channel count")
            return
        for ax, atoms in env.tracked(node.inputs[0]).items():
            if ax >= 2:
                env.freeze(atoms, f"{node.op} {node.name}: pools over axis {ax}")
            else:
                env.set(node.outputs[0], ax, atoms)


class MeanStats(OpRule):
    """A mean over channels is exact as the mean over the kept ones: the oracle weights it by
    the gates (a ``stats`` gate)."""

    gates_stats = True

    def stats_gate(self, node: onnx.NodeProto, p: str, q: str, rank: int, elem: int,
                   opset: int) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto]]:
        return (stats_constants(p, node, rank, elem, opset),
                weighted_mean(node, p, q, opset))


class GlobalMean(MeanStats):
    """GlobalAveragePool: per channel over the spatial axes; over a channel axis (a 3-D
    ``[N, T, C]`` whose last axis is the channels: a layer norm's moments, as tf2onnx spells
    them) it is the mean over the kept channels, gated as ``ReduceMean`` is (``stats``)."""

    ops = ("GlobalAveragePool",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        tracked = env.tracked(node.inputs[0])
        over = [ax for ax in tracked if ax >= 2]
        for ax, atoms in tracked.items():
            if ax < 2:
                env.set(node.outputs[0], ax, atoms)
            elif len(over) == 1:
                env.gate(node, 0, ax, atoms, kind="stats")
            else:
                env.freeze(atoms, f"{node.op} {node.name}: pools over channel axes {over}")


REDUCE = (
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
)


SUM_LIKE = ("ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2")  # zeros add nothing


class Reduce(MeanStats):
    """Reduce over ``axes`` (attribute before opset 18, ReduceSum before 13; input after)."""

    ops = REDUCE

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        rank = env.rank(x)
        axes = attr_or_input_ints(node, env, "axes", 1)
        if rank is None or axes is None:
            freeze_all(node, env, "reduced axes unknown")
            return
        if not axes:
            if int(node.attrs.get("noop_with_empty_axes", 0)):
                env.pass_through(node)
                return
            axes = list(range(rank))
        reduced = {normalize_axis(a, rank) for a in axes}
        keepdims = int(node.attrs.get("keepdims", 1))
        over = [ax for ax in env.tracked(x) if ax in reduced]
        for ax, atoms in env.tracked(x).items():
            if ax in reduced:
                # A sum over kept channels is the sum with the others' gates at zero, a mean
                # over kept channels the gate-weighted mean; max, product, log-sums cannot.
                if node.op in SUM_LIKE:
                    env.gate(node, 0, ax, atoms)
                elif node.op == "ReduceMean" and len(over) == 1:
                    env.gate(node, 0, ax, atoms, kind="stats")
                else:
                    env.freeze(atoms, f"{node.op} {node.name}: reduces over channel axis {ax}")
            else:
                shift = 0 if keepdims else sum(1 for r in reduced if r < ax)
                env.set(node.outputs[0], ax - shift, atoms)


class ArgReduce(OpRule):
    """ArgMax/ArgMin along one axis: the indices depend on the channel count there."""

    ops = ("ArgMax", "ArgMin")

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        rank = env.rank(x)
        if rank is None:
            freeze_all(node, env, "rank unknown")
            return
        axis = normalize_axis(int(node.attrs.get("axis", 0)), rank)
        keepdims = int(node.attrs.get("keepdims", 1))
        for ax, atoms in env.tracked(x).items():
            if ax == axis:
                env.freeze(atoms, f"{node.op} {node.name}: indexes along channel axis {ax}")
            else:
                env.set(node.outputs[0], ax - (0 if keepdims or ax < axis else 1), atoms)
