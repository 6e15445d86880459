"""Resize/Upsample: spatial scaling leaves channels intact; scaling the channel axis freezes."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import const_value, input_or_none, normalize_axis
from .base import OpRule, Rewriter, freeze_all
from .env import Env


class Resize(OpRule):
    """Resize/Upsample with scale 1 (or an unchanged size) on the channel axis."""

    ops = ("Resize", "Upsample")

    def _inputs(self, node: gs.Node, opset: int) -> tuple[int | None, int | None]:
        if node.op == "Upsample":
            return (1 if opset >= 9 else None), None
        return (1, None) if opset < 11 else (2, 3)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        rank = env.rank(x)
        if not env.tracked(x):
            return
        si, zi = self._inputs(node, env.opset)
        scales = const_value(input_or_none(node, si)) if si is not None else node.attrs.get("scales")
        sizes = const_value(input_or_none(node, zi)) if zi is not None else None
        axes = list(node.attrs.get("axes", range(rank or 0)))
        scales = None if scales is None or np.size(scales) == 0 else np.asarray(scales).ravel()
        sizes = None if sizes is None or np.size(sizes) == 0 else np.asarray(sizes).ravel()
        if rank is None or (scales is None and sizes is None):
            freeze_all(node, env, "scales/sizes are not constants")
            return
        axes = [normalize_axis(a, rank) for a in axes]
        for a, atoms in env.tracked(x).items():
            i = axes.index(a) if a in axes else None
            if i is None or (scales is not None and scales[i] == 1) or (
                sizes is not None and sizes[i] == len(atoms)
            ):
                env.set(node.outputs[0], a, atoms)
            else:
                env.freeze(atoms, f"{node.op} {node.name}: rescales channel axis {a}")

    def rewrite(self, node: gs.Node, rw: Rewriter) -> None:
        _, zi = self._inputs(node, int(rw.graph.opset))
        sizes = const_value(input_or_none(node, zi)) if zi is not None else None
        if sizes is None or np.size(sizes) == 0:
            return
        rank = len(node.inputs[0].shape or [])
        axes = [normalize_axis(a, rank) for a in node.attrs.get("axes", range(rank))]
        sizes = np.array(sizes, dtype=np.int64)
        changed = False
        for i, a in enumerate(axes):
            keep = rw.keep(node.outputs[0], a)
            if keep is not None:
                sizes[i] = int(keep.sum())
                changed = True
        if changed:
            rw.set_const_input(node, zi, sizes)
