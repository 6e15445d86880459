"""Gemm and MatMul with a constant weight: they mix input features and create output features."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..ir.graph import input_or_none, prod, shape_of, static_dims, weight_shape
from ..ir.quant import is_weight
from .base import OpRule, freeze_all
from .env import Env
from .layers import GemmLayer, Layer, MatMulLayer


class Gemm(OpRule):
    """Y = alpha * A' B' + beta * C, A' = A or A^T, B' = B or B^T; B constant."""

    ops = ("Gemm",)
    no_macs = None
    no_layer = None

    def scale_outputs(self, node: gs.Node, scale: np.ndarray) -> np.ndarray | None:
        view = self.layer(node)
        if view is None:
            return None
        w = np.asarray(node.inputs[1].values, np.float64)
        return w * (scale[:, None] if view.weight_out_axis() == 0 else scale[None, :])

    def layer(self, node: gs.Node) -> Layer | None:
        """A constant 2-D B and no ``transA``."""
        ok = (len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant)
              and np.ndim(node.inputs[1].values) == 2 and not int(node.attrs.get("transA", 0)))
        return GemmLayer(node) if ok else None

    def macs(self, node: gs.Node) -> int:
        y = static_dims(shape_of(node.outputs[0]))
        a = static_dims(shape_of(node.inputs[0]))
        if y is None or a is None or len(a) != 2:
            return 0
        return prod(y) * (a[0] if int(node.attrs.get("transA", 0)) else a[1])

    def data_rank(self, node: onnx.NodeProto, ranks: dict[str, int]) -> int | None:
        return 2

    def propagate(self, node: gs.Node, env: Env) -> None:
        a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
        c = input_or_none(node, 2)
        if not is_weight(b):
            freeze_all(node, env, "B is not a constant weight")
            return
        trans_a = int(node.attrs.get("transA", 0))
        trans_b = int(node.attrs.get("transB", 0))
        k_ax, n_ax = (1, 0) if trans_b else (0, 1)
        a_in, a_rows = (0, 1) if trans_a else (1, 0)
        if env.get(a, a_rows) is not None:
            env.freeze(env.get(a, a_rows), f"Gemm {node.name}: rows of A are tracked")
        if env.get(a, a_in) is not None:
            env.claim_weight(node, b, k_ax, env.get(a, a_in))
            env.gate(node, 0, a_in)
        out = env.fresh(weight_shape(b)[n_ax])
        env.claim_weight(node, b, n_ax, out)
        if c is not None:
            _bias(node, env, c, out)
        env.set(y, 1, out)


def _bias(node: gs.Node, env: Env, c: gs.Tensor, out) -> None:
    n = len(out)
    shape = env.shape(c)
    if shape is None:
        env.freeze(out, f"{node.op} {node.name}: bias shape unknown")
        return
    if not shape or shape[-1] == 1 and n > 1:
        return  # scalar or broadcast along the features
    last = len(shape) - 1
    if shape[-1] != n:
        env.freeze(out, f"{node.op} {node.name}: bias does not match the features")
    elif is_weight(c):
        env.claim_weight(node, c, last, out)
    elif env.get(c, last) is not None:
        env.union(out, env.get(c, last))
    else:
        env.freeze(out, f"{node.op} {node.name}: bias {c.name} has no channel map")


class MatMul(OpRule):
    """A[..., K] @ W[K, N] with W a 2-D constant (a Linear layer without bias), or a product of
    two activations (attention): batch axes join, rows and columns pass through, and the
    contracted axis can only lose channels it loses in both operands."""

    ops = ("MatMul",)
    no_macs = None
    no_layer = None

    def layer(self, node: gs.Node) -> Layer | None:
        """A constant 2-D weight (a Linear layer); a product of activations is none."""
        ok = (len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant)
              and np.ndim(node.inputs[1].values) == 2)
        return MatMulLayer(node) if ok else None

    def macs(self, node: gs.Node) -> int:
        """Output elements x the contracted length (linear layers and attention products)."""
        y = static_dims(shape_of(node.outputs[0]))
        a = static_dims(shape_of(node.inputs[0]))
        return 0 if y is None or not a else prod(y) * a[-1]

    def propagate(self, node: gs.Node, env: Env) -> None:
        a, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
        rank = env.rank(a)
        if not is_weight(w) and not is_weight(a):
            _activation_product(node, env)
            return
        if not is_weight(w) or len(weight_shape(w)) != 2 or rank is None or rank < 2:
            freeze_all(node, env, "not an activation times a 2-D constant weight")
            return
        last = pass_rows(env, a, y, rank)
        if env.get(a, last) is not None:
            env.claim_weight(node, w, 0, env.get(a, last))
            env.gate(node, 0, last)
        out = env.fresh(weight_shape(w)[1])
        env.claim_weight(node, w, 1, out)
        env.set(y, last, out)


def pass_rows(env: Env, a: gs.Tensor, y: gs.Tensor, rank: int) -> int:
    """A product over ``a``'s last axis: its rows and batch axes pass to ``y`` as they are.
    Returns the contracted axis."""
    last = rank - 1
    for ax, atoms in env.tracked(a).items():
        if ax != last:
            env.set(y, ax, atoms)
    return last


def _activation_product(node: gs.Node, env: Env) -> None:
    a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
    ra, rb, ry = env.rank(a), env.rank(b), env.rank(y)
    if None in (ra, rb, ry) or ra < 2 or rb < 2:
        freeze_all(node, env, "operand ranks unknown or below 2")
        return
    # contraction: A's last axis with B's second to last
    ka, kb = env.get(a, ra - 1), env.get(b, rb - 2)
    if ka is not None and kb is not None and len(ka) == len(kb):
        env.union(ka, kb)
        env.gate(node, 0, ra - 1)  # the product mixes these channels: the oracle gates them
    else:
        for atoms in (ka, kb):
            if atoms is not None:
                env.freeze(atoms, f"MatMul {node.name}: channels contracted with untracked ones")
    rows, cols = env.get(a, ra - 2), env.get(b, rb - 1)
    if rows is not None:
        env.set(y, ry - 2, rows)
    if cols is not None:
        env.set(y, ry - 1, cols)
    # batch axes (numpy broadcasting, aligned right)
    batch = {}
    for t, r in ((a, ra), (b, rb)):
        for ax, atoms in env.tracked(t).items():
            if ax < r - 2:
                batch.setdefault(ax + ry - r, []).append((t, r, atoms))
    for oax, entries in batch.items():
        base = max((atoms for _, _, atoms in entries), key=len)
        ok = True
        for t, r in ((a, ra), (b, rb)):
            ax = oax - (ry - r)
            if ax < 0:
                continue
            atoms = env.get(t, ax)
            if atoms is not None and len(atoms) == len(base):
                if atoms is not base:
                    env.union(base, atoms)
            elif atoms is None and env.dim(t, ax) == 1:
                continue
            else:
                ok = False
        if ok:
            env.set(y, oax, base)
        else:
            for _, _, atoms in entries:
                env.freeze(atoms, f"MatMul {node.name}: batch axis {oax} does not match")
    _folded_batch(node, env, (a, ra), (b, rb), ry=ry)


def _folded_batch(node: gs.Node, env: Env, *operands: tuple[gs.Tensor, int], ry: int) -> None:
    """Heads folded into a symbolic batch axis of both operands (``[b*H, s, d]``, as tf2onnx
    and torch's decomposed attention multiply them) stay folded in the product: each batch
    entry is multiplied on its own, so a head leaves all three alike. Anything else leaves
    the folds unread (then they freeze: ``analysis.channels``)."""
    folds = [env.folds.get(t.name, {}) for t, _ in operands]
    for oax in {ax + ry - r for (_, r), f in zip(operands, folds, strict=True) for ax in f}:
        axes = [oax - (ry - r) for _, r in operands]
        atoms = [f.get(ax) for f, ax in zip(folds, axes, strict=True)]
        if any(x is None for x in atoms) or len({len(x) for x in atoms}) != 1:
            continue
        env.union(atoms[0], atoms[1])
        for t, _ in operands:
            env.fold_readers.add((node.name, t.name))
        env.folds.setdefault(node.outputs[0].name, {})[oax] = atoms[0]
