"""Ops that cut a range out of the channel axis (Slice) or must leave it alone (Pad)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import const_value, input_or_none, normalize_axis
from .base import OpRule, Rewriter, attr_or_input_ints, freeze_all
from .env import Env


def _slice_params(node: gs.Node, opset: int):
    if opset < 10:
        starts = list(node.attrs.get("starts", []))
        ends = list(node.attrs.get("ends", []))
        axes = list(node.attrs.get("axes", range(len(starts))))
        return starts, ends, axes, [1] * len(starts)
    values = [const_value(input_or_none(node, i)) for i in range(1, 5)]
    if values[0] is None or values[1] is None:
        return None
    if (input_or_none(node, 3) is not None and values[2] is None) or (
        input_or_none(node, 4) is not None and values[3] is None
    ):
        return None
    starts, ends = values[0].tolist(), values[1].tolist()
    axes = values[2].tolist() if values[2] is not None else list(range(len(starts)))
    steps = values[3].tolist() if values[3] is not None else [1] * len(starts)
    return starts, ends, axes, steps


def _slice_axes(node: gs.Node, opset: int) -> list[int] | None:
    """The sliced axes even when the bounds are computed at run time (a constant ``axes``
    input, or all axes up to the length of ``starts`` when that length is known)."""
    if opset < 10:
        return list(node.attrs.get("axes", range(len(node.attrs.get("starts", [])))))
    axes = input_or_none(node, 3)
    if axes is not None:
        value = const_value(axes)
        return None if value is None else [int(a) for a in np.asarray(value).ravel()]
    length = (node.inputs[1].shape or [None])[0] if len(node.inputs) > 1 else None
    return list(range(length)) if isinstance(length, int) else None


def _clamp(v: int, n: int) -> int:
    v = v + n if v < 0 else v
    return max(0, min(v, n))


class Slice(OpRule):
    """A contiguous (step 1) window of the channels survives; its bounds are re-counted."""

    ops = ("Slice",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        rank = env.rank(x)
        if not env.tracked(x):
            return
        params = _slice_params(node, env.opset)
        if rank is not None and params is None:  # bounds computed at run time
            axes = _slice_axes(node, env.opset)
            if axes is None:
                freeze_all(node, env, "sliced axes are not constants")
                return
            axes = [normalize_axis(a, rank) for a in axes]
            for a, atoms in env.tracked(x).items():
                if a in axes:
                    env.freeze(atoms, f"Slice {node.name}: bounds on channel axis {a} are "
                                      "computed at run time")
                else:
                    env.set(node.outputs[0], a, atoms)
            return
        if rank is None:
            freeze_all(node, env, "rank unknown")
            return
        starts, ends, axes, steps = params
        axes = [normalize_axis(a, rank) for a in axes]
        for a, atoms in env.tracked(x).items():
            if a not in axes:
                env.set(node.outputs[0], a, atoms)
                continue
            i = axes.index(a)
            if steps[i] != 1:
                env.freeze(atoms, f"Slice {node.name}: strided slice on channel axis {a}")
                continue
            lo, hi = _clamp(starts[i], len(atoms)), _clamp(ends[i], len(atoms))
            env.set(node.outputs[0], a, atoms[lo:max(lo, hi)])

    def rewrite(self, node: gs.Node, rw: Rewriter) -> None:
        x = node.inputs[0]
        opset = int(rw.graph.opset)
        rank = len(x.shape or [])
        params = _slice_params(node, opset)
        if params is None:  # run-time bounds: only axes without channel changes pass through
            return
        starts, ends, axes, _ = params
        axes = [normalize_axis(a, rank) for a in axes]
        changed = False
        for i, a in enumerate(axes):
            keep = rw.keep(x, a)
            if keep is None:
                continue
            lo, hi = _clamp(starts[i], keep.size), _clamp(ends[i], keep.size)
            starts[i] = int(keep[:lo].sum())
            ends[i] = starts[i] + int(keep[lo:max(lo, hi)].sum())
            changed = True
        if not changed:
            return
        if opset < 10:
            node.attrs["starts"], node.attrs["ends"] = starts, ends
        else:
            rw.set_const_input(node, 1, np.array(starts, dtype=np.int64))
            rw.set_const_input(node, 2, np.array(ends, dtype=np.int64))


class Pad(OpRule):
    """Padding the spatial axes is fine; padding the channel axis is not removable."""

    ops = ("Pad",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        rank = env.rank(x)
        if not env.tracked(x):
            return
        pads = attr_or_input_ints(node, env, "pads", 1)
        axes = attr_or_input_ints(node, env, "axes", 3) if env.opset >= 18 else []
        if rank is None or pads is None or axes is None:
            freeze_all(node, env, "pads are not constants")
            return
        axes = [normalize_axis(a, rank) for a in axes] or list(range(rank))
        half = len(pads) // 2
        for a, atoms in env.tracked(x).items():
            i = axes.index(a) if a in axes else None
            if i is not None and (pads[i] != 0 or pads[half + i] != 0):
                env.freeze(atoms, f"Pad {node.name}: pads channel axis {a}")
            else:
                env.set(node.outputs[0], a, atoms)
