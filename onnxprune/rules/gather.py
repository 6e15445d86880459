"""Gather: indices along the channel axis pick (and may repeat) channels; along other axes
channels pass through. A row lookup in a constant table (token and position embeddings)
creates channels: the table's columns."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import const_value, normalize_axis
from ..ir.quant import is_weight
from .base import OpRule, Rewriter, freeze_all
from .env import Env


class Gather(OpRule):
    """Gather along the channel axis with constant indices gives *new* channels, each linked
    to the input channel it copies: an output channel can go on its own; an input channel
    can go only when every output copying it goes. Along other axes channels pass through."""

    ops = ("Gather",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x, idx, y = node.inputs[0], node.inputs[1], node.outputs[0]
        rank, idx_rank = env.rank(x), env.rank(idx)
        if rank is None or idx_rank is None:
            freeze_all(node, env, "rank unknown")
            return
        axis = normalize_axis(int(node.attrs.get("axis", 0)), rank)
        indices = env.const(idx)
        if rank == 2 and axis == 0 and is_weight(x) and not env.tracked(x):
            out = env.fresh(int(env.dim(x, 1)))  # an embedding: rows looked up, columns new
            env.claim_weight(node, x, 1, out)
            env.set(y, idx_rank, out)
        for a, atoms in env.tracked(x).items():
            if a != axis:
                env.set(y, a if a < axis else a + idx_rank - 1, atoms)
            elif indices is None or indices.ndim > 1:
                env.freeze(atoms, f"Gather {node.name}: gathers channels by computed indices")
            else:
                picked = atoms[np.asarray(indices, dtype=np.int64).ravel() % len(atoms)]
                if indices.ndim == 0:  # the axis disappears: that channel must stay
                    env.freeze(picked, f"Gather {node.name}: reads channel {int(indices)} alone")
                    continue
                out = env.fresh(len(picked))
                env.link(out, picked)
                env.set(y, a, out)
        env.freeze_tensor(idx, f"Gather {node.name}: indices")

    def rewrite(self, node: gs.Node, rw: Rewriter) -> None:
        x, y = node.inputs[0], node.outputs[0]
        rank = len(x.shape or [])
        if not rank:
            return
        axis = normalize_axis(int(node.attrs.get("axis", 0)), rank)
        keep_in, keep_out = rw.keep(x, axis), rw.keep(y, axis)
        if keep_in is None and keep_out is None:
            return
        indices = np.asarray(const_value(node.inputs[1]), dtype=np.int64)
        n_in = keep_in.size if keep_in is not None else int(x.shape[axis])
        keep_in = np.ones(n_in, bool) if keep_in is None else keep_in
        new_pos = np.cumsum(keep_in) - 1
        if indices.ndim == 0:
            rw.set_const_input(node, 1, np.array(new_pos[int(indices) % n_in], dtype=np.int64))
            return
        keep_out = np.ones(indices.size, bool) if keep_out is None else keep_out
        picked = indices.ravel()[keep_out] % n_in
        assert keep_in[picked].all(), f"Gather {node.name}: a kept output reads a removed input"
        rw.set_const_input(node, 1, new_pos[picked].astype(np.int64))
