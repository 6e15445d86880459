"""Per-channel values computed from constants: an operand such as ``s = gamma / sqrt(var +
eps)`` (a ``[N, T, 1]`` statistic times a ``[C]`` weight), which TensorFlow's layer norm
multiplies into the stream (``x * s + (beta - mean * s)``, as tf2onnx exports it). Its channel
axis comes only from the constants in it: the chain of elementwise ops back to them is sliced
with the stream's channels (each constant claimed, every tensor of the chain following the kept
channels), so the operand joins the stream instead of freezing it."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.quant import is_weight
from .env import Env

CHAIN_OPS = ("Mul", "Add", "Sub", "Div", "Reciprocal", "Sqrt", "Neg", "Abs", "Exp", "Log",
             "Identity", "Cast")  # per element; a chain of them keeps per-channel values apart
MAX_NODES = 16


def constant_chain(t: gs.Tensor, axis: int, n: int, env: Env
                   ) -> tuple[list[tuple[gs.Node, gs.Tensor, int]],
                              list[tuple[gs.Tensor, int]], list[np.ndarray]] | None:
    """How ``t`` (untracked, ``n`` entries on ``axis``) is a per-channel value of constants:
    (weights to claim as (reader, weight, axis), tensors to map as (tensor, axis), tracked atoms
    met on the way, joined with the caller's); None when it is not: an operand that is neither
    a weight of ``n`` entries there, nor of size 1 there, nor tracked, nor such a chain; a
    tensor of the chain read by anything but elementwise ops, or a graph output. Every reader
    of a chain's tensor must follow its channels in the end (``unfollowed``)."""
    claims: list[tuple[gs.Node, gs.Tensor, int]] = []
    mapped: list[tuple[gs.Tensor, int]] = []
    met: list[np.ndarray] = []
    seen: set[str] = set()

    def walk(u: gs.Tensor, neg: int) -> bool:  # ``neg``: the axis counted from the right
        if u.name in seen:
            return True
        seen.add(u.name)
        rank = env.rank(u)
        if rank is None or len(u.inputs) != 1 or env.is_output(u) or len(seen) > MAX_NODES:
            return False
        if not all(r.op in CHAIN_OPS for r in u.outputs):
            return False
        node = u.inputs[0]
        if node.op not in CHAIN_OPS:
            return False
        mapped.append((u, rank + neg))
        for v in (x for x in node.inputs if x is not None and x.name):
            r = env.rank(v)
            if r is None:
                return False
            ax = r + neg
            if ax < 0 or env.dim(v, ax) == 1:
                continue  # broadcast along the channels
            atoms = env.get(v, ax)
            if atoms is not None:
                if len(atoms) != n:
                    return False
                met.append(atoms)
            elif env.dim(v, ax) == n and is_weight(v):
                claims.append((node, v, ax))
            elif not walk(v, neg):
                return False
        return True

    rank = env.rank(t)
    if n <= 1 or rank is None or not walk(t, axis - rank) or not claims:
        return None
    return claims, mapped, met


def unfollowed(env: Env, chains: list[tuple[gs.Tensor, int, np.ndarray]]) -> None:
    """After propagation: a chain's tensor read by an op whose output does not carry its
    channels (a side path that never joins a stream: its size would change unseen) freezes
    the channels."""
    for u, axis, atoms in chains:
        rank = env.rank(u)
        for reader in u.outputs:
            out = reader.outputs[0] if reader.outputs else None
            r = env.rank(out) if out is not None else None
            if r is None or rank is None or env.get(out, axis + r - rank) is None:
                env.freeze(atoms, f"{reader.op} {reader.name}: reads per-channel values of "
                                  f"{u.name} without following their channels")
