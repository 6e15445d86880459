"""Normalizations and softmax: per-channel parameters, or freezing where stats span channels."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..analysis.env import Env
from ..graph import normalize_axis
from .base import OpRule, Rewriter, freeze_all


class BatchNormalization(OpRule):
    """Per-channel scale, bias, mean and variance on axis 1."""

    ops = ("BatchNormalization",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        used_stats = any(o.outputs for o in node.outputs[1:])
        params = node.inputs[1:5]
        if used_stats or not all(isinstance(p, gs.Constant) for p in params):
            freeze_all(node, env, "training-mode outputs or non-constant statistics")
            return
        env.pass_through(node)
        atoms = env.get(node.inputs[0], 1)
        if atoms is not None:
            for p in params:
                env.claim(node, p, 0, atoms)


class InstanceNormalization(OpRule):
    """Statistics per sample and channel over spatial axes; scale and bias per channel."""

    ops = ("InstanceNormalization",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        if not all(isinstance(p, gs.Constant) for p in node.inputs[1:3]):
            freeze_all(node, env, "non-constant scale or bias")
            return
        for ax, atoms in env.tracked(x).items():
            if ax >= 2:
                env.freeze(atoms, f"{node.op} {node.name}: normalizes over axis {ax}")
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
        if not all(isinstance(p, gs.Constant) for p in node.inputs[1:3]):
            freeze_all(node, env, "non-constant scale or bias")
            return
        for ax, atoms in env.tracked(x).items():
            if ax >= 2:
                env.freeze(atoms, f"{node.op} {node.name}: normalizes over axis {ax}")
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
    """Statistics over axes >= ``axis``: channels there cannot be removed exactly."""

    ops = ("LayerNormalization",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        rank = env.rank(x)
        if rank is None:
            freeze_all(node, env, "rank unknown")
            return
        first = normalize_axis(int(node.attrs.get("axis", -1)), rank)
        for ax, atoms in env.tracked(x).items():
            if ax >= first:
                env.freeze(atoms, f"{node.op} {node.name}: statistics span axis {ax}")
            else:
                env.set(node.outputs[0], ax, atoms)


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
