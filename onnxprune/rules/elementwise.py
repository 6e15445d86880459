"""Elementwise ops: unary (channels pass through) and broadcasting n-ary ops."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..ir.quant import is_weight
from .base import OpRule
from .constant_chain import constant_chain
from .env import Env
from .expand import expanded_constant

UNARY = (
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Clip", "Gelu", "Erf", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Abs", "Neg",
    "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Tan",
    "Sinh", "Cosh", "Asin", "Acos", "Atan", "Asinh", "Acosh", "Atanh", "Shrink", "Not",
    "IsNaN", "IsInf", "Identity", "Dropout", "Cast", "CastLike",
)
BROADCAST = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where",
    "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "Mod",
)


class Unary(OpRule):
    """y = f(x) elementwise (extra inputs such as Clip's bounds are scalars)."""

    ops = UNARY

    def propagate(self, node: gs.Node, env: Env) -> None:
        env.pass_through(node)
        # Dropout's mask output has the same layout as the data.
        if node.op == "Dropout" and len(node.outputs) > 1:
            env.pass_through(node, 0, 1)


class Broadcast(OpRule):
    """Numpy-broadcasting ops: channel i of every operand is one unit; constants are sliced."""

    ops = BROADCAST

    def propagate(self, node: gs.Node, env: Env) -> None:
        operands = [t for t in node.inputs if t is not None]
        join_broadcast(node, env, operands, node.outputs[0])


def join_broadcast(
    node: gs.Node, env: Env, operands: list[gs.Tensor], out: gs.Tensor, skip_axis: int | None = None
) -> None:
    """Align operands right (numpy rules), join tracked channels, claim per-channel constants.

    ``skip_axis`` (an output axis) is left to the caller, e.g. Concat's concatenation axis.
    """
    ranks = [env.rank(t) for t in operands]
    tracked_axes = [(i, ax) for i, t in enumerate(operands) for ax in env.tracked(t)]
    if not tracked_axes:
        return
    if any(r is None for r in ranks):
        env.freeze_inputs(node, f"{node.op} {node.name}: operand rank unknown")
        return
    rank = max(ranks)
    out_shape = env.shape(out)
    by_out_axis: dict[int, list] = {}
    for i, ax in tracked_axes:
        by_out_axis.setdefault(ax + rank - ranks[i], []).append(env.get(operands[i], ax))
    for oax, atom_lists in sorted(by_out_axis.items()):
        if oax == skip_axis:
            continue
        base = max(atom_lists, key=len)
        n = len(base)
        width = _out_dim(out_shape, oax, operands, ranks, rank, env)
        if width != n:  # a tracked operand broadcast up to more (or unknown) positions
            for atoms in atom_lists:
                env.freeze(atoms, f"{node.op} {node.name}: channels broadcast to axis {oax}")
            continue
        for i, t in enumerate(operands):
            ax = oax - (rank - ranks[i])
            if ax < 0:
                continue
            atoms = env.get(t, ax)
            if atoms is not None:
                if len(atoms) == n:
                    if atoms is not base:
                        env.union(base, atoms)
                elif len(atoms) != 1:
                    env.freeze(base, f"{node.op} {node.name}: channel counts disagree")
                continue
            dim = env.dim(t, ax)
            if dim == 1 and n > 1:
                continue
            if dim == n and is_weight(t):
                env.claim_weight(node, t, ax, base)
            elif (src := expanded_constant(t, ax, n, env)) is not None:
                env.claim(src[0], src[1], src[2], base)
                env.set(t, ax, base)  # the Expand's target follows the kept channels
            elif (chain := constant_chain(t, ax, n, env)) is not None:
                claims, mapped, met = chain
                for reader, weight, wax in claims:
                    env.claim_weight(reader, weight, wax, base)
                for u, uax in mapped:  # the chain follows the kept channels
                    env.set(u, uax, base)
                    env.chains.append((u, uax, base))
                for atoms in met:
                    env.union(base, atoms)
            else:
                env.freeze(
                    base, f"{node.op} {node.name}: operand {t.name} has no channel map on axis {ax}"
                )
        env.set(out, oax, base)


def _out_dim(out_shape, oax: int, operands, ranks, rank: int, env: Env):
    """The output's size on ``oax``: from its inferred shape, else the operands' largest."""
    if out_shape is not None and len(out_shape) == rank and isinstance(out_shape[oax], int):
        return out_shape[oax]
    dims = []
    for t, r in zip(operands, ranks, strict=True):
        ax = oax - (rank - r)
        if ax >= 0:
            dims.append(env.dim(t, ax))
    if any(not isinstance(d, int) for d in dims):
        return None
    return max(dims, default=None)
