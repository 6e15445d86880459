"""Ops that assemble or divide the channel axis along its length: Concat (each input's
channels at an offset) and Split (each output a range)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import normalize_axis
from .base import OpRule, Rewriter, attr_or_input_ints, freeze_all
from .elementwise import join_broadcast
from .env import Env
from .expand import expanded_constant


class Concat(OpRule):
    """Channels of the operands are laid end to end; other axes must agree (joined)."""

    ops = ("Concat",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        y = node.outputs[0]
        rank = env.rank(y) or env.rank(node.inputs[0])
        if rank is None:
            freeze_all(node, env, "rank unknown")
            return
        axis = normalize_axis(int(node.attrs["axis"]), rank)
        join_broadcast(node, env, list(node.inputs), y, skip_axis=axis)
        if not any(env.get(t, axis) is not None for t in node.inputs):
            return
        parts = []
        for t in node.inputs:
            atoms = env.get(t, axis)
            if atoms is None:
                dim = env.dim(t, axis)
                if not isinstance(dim, int):
                    for u in node.inputs:
                        if env.get(u, axis) is not None:
                            env.freeze(env.get(u, axis), f"Concat {node.name}: operand size unknown")
                    return
                atoms = env.fresh(dim)
                if isinstance(t, gs.Constant):
                    env.claim(node, t, axis, atoms)
                elif (src := expanded_constant(t, axis, dim, env)) is not None:
                    env.claim(src[0], src[1], src[2], atoms)
                    env.set(t, axis, atoms)  # the Expand's target follows the kept channels
                else:
                    env.freeze(atoms, f"Concat {node.name}: operand {t.name} has no channel map")
            parts.append(atoms)
        env.set(y, axis, np.concatenate(parts))


def _split_sizes(node: gs.Node, env: Env, n: int) -> list[int] | None:
    sizes = attr_or_input_ints(node, env, "split", 1)
    if sizes is None:
        return None
    if sizes:
        return sizes
    k = len(node.outputs)
    if "num_outputs" in node.attrs:  # opset 18: ceil-sized chunks, the last one smaller
        chunk = -(-n // k)
        return [chunk] * (k - 1) + [n - chunk * (k - 1)]
    return [n // k] * k if n % k == 0 else None


class Split(OpRule):
    ops = ("Split",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        rank = env.rank(x)
        if rank is None:
            freeze_all(node, env, "rank unknown")
            return
        axis = normalize_axis(int(node.attrs.get("axis", 0)), rank)
        for a, atoms in env.tracked(x).items():
            if a != axis:
                for out in node.outputs:
                    env.set(out, a, atoms)
                continue
            sizes = _split_sizes(node, env, len(atoms))
            if sizes is None or sum(sizes) != len(atoms):
                env.freeze(atoms, f"Split {node.name}: split sizes unknown")
                continue
            offsets = np.cumsum([0] + sizes)
            for out, lo, hi in zip(node.outputs, offsets[:-1], offsets[1:], strict=True):
                env.set(out, a, atoms[lo:hi])

    def rewrite(self, node: gs.Node, rw: Rewriter) -> None:
        rank = len(node.inputs[0].shape or [])
        axis = normalize_axis(int(node.attrs.get("axis", 0)), rank) if rank else 0
        keeps = [rw.keep(out, axis) for out in node.outputs]
        if all(k is None for k in keeps):
            return
        sizes = []
        for out, keep in zip(node.outputs, keeps, strict=True):
            sizes.append(int(keep.sum()) if keep is not None else int(out.shape[axis]))
        if "split" in node.attrs or int(rw.graph.opset) < 13:
            node.attrs["split"] = sizes
            return
        node.attrs.pop("num_outputs", None)
        values = np.array(sizes, dtype=np.int64)
        if len(node.inputs) > 1:
            rw.set_const_input(node, 1, values)
        else:
            node.inputs.append(gs.Constant(f"{node.name}_split", values))
