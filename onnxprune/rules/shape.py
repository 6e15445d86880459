"""Shape: channel counts read as data freeze those channels (unless nobody reads them, or
they only become the shapes of reshapes)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import const_value, input_or_none, normalize_axis
from .base import OpRule, freeze_all
from .env import Env


class Shape(OpRule):
    """Shape of a tensor: a channel count read as data cannot change. Dimensions that are
    read are those its consumers pick (Gather/Slice with constant indices), else all."""

    ops = ("Shape",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        rank = env.rank(x)
        if rank is None:
            freeze_all(node, env, "reads the shape of a tensor with channels")
            return
        start = normalize_axis(int(node.attrs.get("start", 0)), rank)
        end = node.attrs.get("end")
        end = rank if end is None else normalize_axis(int(end), rank)
        if only_shapes(node.outputs[0]):
            return  # the sizes become shapes of reshapes/expands: they follow the cut
        read = _read_dims(node.outputs[0], end - start)
        for a, atoms in env.tracked(x).items():
            if start <= a < end and (read is None or a - start in read):
                env.freeze(atoms, f"Shape {node.name}: reads the size of channel axis {a}")


CARRY = ("Slice", "Gather", "Concat", "Unsqueeze", "Squeeze", "Cast", "Identity", "Mul", "Add",
         "Sub", "Div", "Reshape", "ReduceProd", "Max", "Min")  # tf2onnx: products of dims


def only_shapes(t: gs.Tensor, depth: int = 0) -> bool:
    """Every use of the shape vector ``t`` ends as the shape input of a Reshape or Expand
    (torch's decomposed attention reads the head count to fold heads into the batch and back):
    after a cut the vector reads the new size and the shapes follow. Verification checks it."""
    if depth > 12 or not t.outputs:
        return False
    for c in t.outputs:
        if c.op in ("Reshape", "Expand") and len(c.inputs) > 1 and c.inputs[1] is t:
            continue
        if c.op in CARRY and c.op != "Reshape" and all(only_shapes(o, depth + 1)
                                                       for o in c.outputs):
            continue
        return False
    return True


def _read_dims(shape: gs.Tensor, n: int) -> set[int] | None:
    """Positions of a shape vector its consumers read, when all of them are Gather/Slice with
    constant indices; None when unknown (then everything counts as read)."""
    read: set[int] = set()
    for c in shape.outputs:
        if c.op == "Gather" and int(c.attrs.get("axis", 0)) == 0:
            idx = const_value(c.inputs[1])
            if idx is None:
                return None
            read |= {int(i) % n for i in np.asarray(idx).ravel()}
        elif c.op == "Slice" and c.inputs[0] is shape:
            bounds = [const_value(input_or_none(c, i)) for i in range(1, 5)]
            if bounds[0] is None or bounds[1] is None:
                return None
            step = 1 if bounds[3] is None else int(np.asarray(bounds[3]).ravel()[0])
            lo, hi = int(np.asarray(bounds[0]).ravel()[0]), int(np.asarray(bounds[1]).ravel()[0])
            read |= set(range(n)[slice(lo, hi, step)])
        else:
            return None
    return read
