"""Normalizations and softmax: per-channel parameters, or freezing where stats span channels."""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from ..ir.graph import normalize_axis
from .base import OpRule, Rewriter, freeze_all
from .env import Env
from .gating import stats_constants, weighted_layernorm


class BatchNormalization(OpRule):
    """Per-channel scale, bias, mean and variance on axis 1."""

    ops = ("BatchNormalization",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        used_stats = any(env.used(o) for o in node.outputs[1:])
        params = node.inputs[1:5]
        if used_stats or not all(isinstance(p, gs.Constant) for p in params):
            freeze_all(node, env, "training-mode outputs or non-constant statistics")
            return
        env.pass_through(node)
        atoms = env.get(node.inputs[0], 1)
        if atoms is not None:
            for p in params:
                env.claim(node, p, 0, atoms)


def _spatial_stats(node: gs.Node, env: Env) -> bool:
    """Instance/group norms: statistics over the spatial axes (channels there freeze); scale
    and bias must be constants. False when everything was frozen."""
    if not all(isinstance(p, gs.Constant) for p in node.inputs[1:3]):
        freeze_all(node, env, "non-constant scale or bias")
        return False
    for ax, atoms in env.tracked(node.inputs[0]).items():
        if ax >= 2:
            env.freeze(atoms, f"{node.op} {node.name}: normalizes over axis {ax}")
    return True


class InstanceNormalization(OpRule):
    """Statistics per sample and channel over spatial axes; scale and bias per channel."""

    ops = ("InstanceNormalization",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        if not _spatial_stats(node, env):
            return
        env.pass_through(node)
        atoms = env.get(x, 1)
        if atoms is not None:
            for p in node.inputs[1:3]:
                env.claim(node, p, 0, atoms)


class GroupNormalization(OpRule):
    """Statistics over the channels of a group: only whole groups can go (num_groups shrinks).
    Scale and bias are per group (opset 18) or per channel (opset 21)."""

    ops = ("GroupNormalization",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        groups = int(node.attrs["num_groups"])
        if not _spatial_stats(node, env):
            return
        xin = env.get(x, 1)
        env.pass_through(node)
        if xin is None:
            return
        reps = env.atoms.union_blocks(xin, len(xin) // groups)
        for p in node.inputs[1:3]:
            env.claim(node, p, 0, reps if p.values.shape[0] == groups else xin)

    def rewrite(self, node: gs.Node, rw: Rewriter) -> None:
        keep = rw.keep(node.outputs[0], 1)
        if keep is not None:
            per_group = keep.size // int(node.attrs["num_groups"])
            node.attrs["num_groups"] = int(keep.sum()) // per_group


class LayerNormalization(OpRule):
    """Statistics over axes >= ``axis``. Removing channels on one of those axes is exact when
    the statistics are taken over the kept channels only: the pruned node does exactly that,
    and the oracle weights its statistics by the gates (a ``stats`` gate). Scale and bias are
    sliced with the channels. Two tracked normalized axes, used Mean/InvStdDev outputs or a
    non-constant scale/bias freeze."""

    ops = ("LayerNormalization",)
    gates_stats = True

    def stats_gate(self, node: onnx.NodeProto, p: str, q: str, rank: int, elem: int,
                   opset: int) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto]]:
        return (stats_constants(p, node, rank, elem, opset),
                weighted_layernorm(node, p, q, opset))

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        rank = env.rank(x)
        if rank is None:
            freeze_all(node, env, "rank unknown")
            return
        first = normalize_axis(int(node.attrs.get("axis", -1)), rank)
        normed = {ax: a for ax, a in env.tracked(x).items() if ax >= first}
        params = [p for p in node.inputs[1:3] if not _empty(p)]
        why = None
        if any(env.used(o) for o in node.outputs[1:]):
            why = "Mean/InvStdDev outputs are used"
        elif not all(isinstance(p, gs.Constant) for p in params):
            why = "non-constant scale or bias"
        elif len(normed) > 1:
            why = "statistics span two tracked axes"
        for ax, atoms in env.tracked(x).items():
            if ax < first:
                env.set(node.outputs[0], ax, atoms)
            elif why:
                env.freeze(atoms, f"{node.op} {node.name}: {why}")
            else:
                env.set(node.outputs[0], ax, atoms)
                for p in params:
                    pax = ax - rank + p.values.ndim
                    if pax >= 0 and p.values.shape[pax] == atoms.size:
                        env.claim(node, p, pax, atoms)
                    elif pax >= 0 and p.values.shape[pax] != 1:
                        env.freeze(atoms, f"{node.op} {node.name}: parameter shape "
                                          f"{list(p.values.shape)} does not follow axis {ax}")
                env.gate(node, 0, ax, atoms, kind="stats")


def _empty(t: gs.Tensor) -> bool:
    return isinstance(t, gs.Variable) and t.is_empty()


class Softmax(OpRule):
    """Softmax-like ops normalize along one axis (opset < 13: all axes from ``axis`` on)."""

    ops = ("Softmax", "LogSoftmax", "Hardmax")

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        rank = env.rank(x)
        if rank is None:
            freeze_all(node, env, "rank unknown")
            return
        legacy = env.opset < 13
        axis = normalize_axis(int(node.attrs.get("axis", 1 if legacy else -1)), rank)
        for ax, atoms in env.tracked(x).items():
            if ax == axis or (legacy and ax >= axis):
                env.freeze(atoms, f"{node.op} {node.name}: normalizes along axis {ax}")
            else:
                env.set(node.outputs[0], ax, atoms)
