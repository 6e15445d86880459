"""Ops that move channels between axes: Reshape, Flatten, Transpose, Squeeze, Unsqueeze.

Reshape and Flatten map a channel axis onto an output axis with the same outer extent:
either one-to-one, or each channel becomes a block of features (flatten), or blocks of
features become one channel (unflatten: the block's producers are joined into one unit).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import Dim, const_value, normalize_axis
from .base import OpRule, Rewriter, attr_or_input_ints, freeze_all
from .env import Env

Mono = tuple[int, tuple[str, ...]]  # a dimension as static factor x symbolic factors


def monomial(d: Dim) -> Mono | None:
    """A size as a monomial; a product dimension from symbolic inference (``batch*sequence``,
    ``4*sequence``) splits into its factors, any other expression stays one symbol."""
    if d is None:
        return None
    if not isinstance(d, str):
        return int(d), ()
    parts = [p.strip() for p in d.split("*")]
    if len(parts) > 1 and all(p.isdigit() or p.isidentifier() for p in parts):
        static = int(np.prod([int(p) for p in parts if p.isdigit()], dtype=np.int64))
        return static, tuple(sorted(p for p in parts if not p.isdigit()))
    return 1, (d,)


def _product(monos: list[Mono | None]) -> Mono | None:
    static, syms = 1, []
    for m in monos:
        if m is None:
            return None
        static *= m[0]
        syms.extend(m[1])
    return static, tuple(sorted(syms))


def _static(m: Mono | None) -> int | None:
    return m[0] if m is not None and not m[1] else None


COLUMN_ROWS = 3  # a split into (rows <= this, columns) keeps the columns as channels


def map_axis(in_shape: list[Mono | None], out_shape: list[Mono | None], a: int,
             untile: bool = True, apart: Callable[[int], bool] | None = None):
    """Where channel axis ``a`` lands: (out axis, kind, factor) or None.

    'same': one to one. 'spread': each channel becomes ``factor`` consecutive output positions
    (flatten). 'join': ``factor`` consecutive channels become one output position (unflatten).
    'column': the axis splits into (rows, columns) with few rows (bidirectional halves, q/k/v):
    channel c of every row is one unit on the columns axis. 'tile': the axis merges with
    ``factor[0]`` static positions of the axes before it (each channel ``factor[1]`` wide, or
    ``factor[2]`` channels per position). 'untile': ``factor[0]`` copies of the channels move to
    the outer axes, the rest maps by ``factor[1:]``.

    A split into just (rows, columns) is read as 'column' only when ``apart(b)`` says the rows
    are taken apart downstream (q/k/v, directions summed); otherwise the rows are units ('join':
    two key/value heads of eight dims are two heads, not eight dims shared by both).
    """
    n_in = _static(in_shape[a])
    outer = _product(in_shape[:a])
    inner = _product(in_shape[a + 1:])  # may be symbolic: [b, H, s, d] -> [b, H, s * d]
    if n_in is None or outer is None or inner is None:
        return None
    for b in reversed(range(len(out_shape))):
        if _product(out_shape[:b]) != outer:
            continue
        n_out, inner_out = _static(out_shape[b]), _product(out_shape[b + 1:])
        if n_out is None or inner_out is None:
            continue
        spread, join = _ratio(inner, inner_out), _ratio(inner_out, inner)
        if spread == 1 and n_in == n_out:
            return b, "same", 1
        if spread is not None and n_out == n_in * spread:
            return b, "spread", spread
        cols = _static(out_shape[b + 1]) if b + 1 < len(out_shape) else None
        if cols is not None and n_out <= COLUMN_ROWS and (
                b + 2 < len(out_shape) or apart is None or apart(b)):
            # [.., rows * cols * sub, ..] -> [.., rows, cols, sub.., ..]: e.g. q/k/v x heads x dims
            for e in range(b + 1, len(out_shape)):
                span = _static(_product(out_shape[b:e + 1]))
                if span is None or span > n_in:
                    break
                if span == n_in and _product(out_shape[e + 1:]) == inner:
                    sub = span // (n_out * cols)
                    return b + 1, "column", (cols, sub)
        if join is not None and n_in == n_out * join:
            return b, "join", join
    inner_in = _static(inner)
    if inner_in is None:
        return None
    return (_tile(in_shape, out_shape, a, n_in, inner_in)
            or (_untile(in_shape, out_shape, a, n_in) if untile else None))


APART = ("Split", "Gather", "Slice", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin")


def taken_apart(t: gs.Tensor, axis: int, depth: int = 0) -> bool:
    """Some reader splits, indexes, slices or reduces ``t`` along ``axis`` (followed through
    Transpose, Unsqueeze, Squeeze and elementwise casts)."""
    rank = len(t.shape or [])
    if depth > 6 or not rank:
        return False
    for node in t.outputs:
        op, out = node.op, node.outputs[0] if node.outputs else None
        if op in APART:
            if op in ("Split", "Gather"):
                axes = [int(node.attrs.get("axis", 0))]
            else:  # Slice's axes are input 3, a reduction's input 1 (or attributes)
                axes = attr_or_input_ints(node, None, "axes", 3 if op == "Slice" else 1)
                axes = list(range(rank)) if not axes else axes
            if axis in {normalize_axis(v, rank) for v in axes}:
                return True
        elif op == "Transpose" and out is not None:
            perm = list(node.attrs.get("perm", list(reversed(range(rank)))))
            if taken_apart(out, perm.index(axis), depth + 1):
                return True
        elif op in ("Unsqueeze", "Squeeze", "Cast", "Identity") and out is not None:
            moved = _moved(node, axis, rank)
            if moved is not None and taken_apart(out, moved, depth + 1):
                return True
    return False


def _moved(node: gs.Node, axis: int, rank: int) -> int | None:
    """Where ``axis`` of the input is in the output of Unsqueeze/Squeeze/Cast/Identity."""
    if node.op in ("Cast", "Identity"):
        return axis
    axes = attr_or_input_ints(node, None, "axes", 1)
    if not axes:
        return None
    if node.op == "Unsqueeze":
        out_rank = rank + len(axes)
        new = {normalize_axis(v, out_rank) for v in axes}
        return [i for i in range(out_rank) if i not in new][axis]
    gone = {normalize_axis(v, rank) for v in axes}
    return None if axis in gone else axis - sum(1 for g in gone if g < axis)


def _fold(in_shape: list[Mono | None], out_shape: list[Mono | None], a: int) -> int | None:
    """The output axis into which channel axis ``a`` merges with symbolic axes before it as
    the fastest-varying factor ([b, H, s, d] -> [H*b, s, d]), or None."""
    inner = _product(in_shape[a + 1:])
    for k in range(a):
        merged, outer = _product(in_shape[k:a + 1]), _product(in_shape[:k])
        if merged is None or outer is None or not merged[1]:
            continue
        for b in range(len(out_shape)):
            if (out_shape[b] == merged and _product(out_shape[:b]) == outer
                    and _product(out_shape[b + 1:]) == inner):
                return b
    return None


def _unfold(in_shape: list[Mono | None], out_shape: list[Mono | None], b: int,
            n: int) -> int | None:
    """The output axis of ``n`` channels that a folded axis ``b`` splits back into, or None."""
    for c in range(len(out_shape)):
        if (out_shape[c] == (n, ()) and _product(out_shape[:c + 1]) == _product(in_shape[:b + 1])
                and _product(out_shape[c + 1:]) == _product(in_shape[b + 1:])):
            return c
    return None


def _ratio(a: Mono, b: Mono) -> int | None:
    """``a / b`` when it is a whole number (the same symbols on both sides), else None."""
    if a[1] != b[1] or b[0] == 0 or a[0] % b[0]:
        return None
    return a[0] // b[0]


def _tile(in_shape, out_shape, a: int, n_in: int, inner_in: int):
    """The channel axis merged with static axes before it: [..., 2, H] -> [..., 2H], or with
    blocks of channels becoming one position: [N, H * d] -> [N * H, d] (attention heads folded
    into a static batch)."""
    for k in range(a - 1, -1, -1):
        copies = _static(_product(in_shape[k:a]))
        outer = _product(in_shape[:k])
        if copies is None or outer is None:
            return None
        for b in range(len(out_shape)):
            if _product(out_shape[:b]) != outer:
                continue
            n_out, inner_out = _static(out_shape[b]), _static(_product(out_shape[b + 1:]))
            if n_out is None or inner_out is None:
                continue
            if inner_in % inner_out == 0 and n_out == copies * n_in * (inner_in // inner_out):
                return b, "tile", (copies, inner_in // inner_out, 1)
            join = inner_out // inner_in
            if (inner_out % inner_in == 0 and n_in % join == 0
                    and n_out == copies * (n_in // join)):
                return b, "tile", (copies, 1, join)
    return None


def _untile(in_shape, out_shape, a: int, n_in: int):
    """The channel axis is ``c`` copies of ``u`` channels whose copy index moves to the outer
    axes: [N * H, d] -> [N, H * d] (heads unfolded from a static batch). Position ``k*u + j``
    is channel ``j`` for every ``k``; the ``u`` channels then map as usual."""
    for c in range(2, n_in):
        if n_in % c:
            continue
        split = in_shape[:a] + [(c, ()), (n_in // c, ())] + in_shape[a + 1:]
        where = map_axis(split, out_shape, a + 1, untile=False)
        if where is not None:
            return where[0], "untile", (c, where[1], where[2])
    return None


def _apply(env: Env, atoms: np.ndarray, kind: str, factor) -> np.ndarray:
    if kind == "spread":
        return np.repeat(atoms, factor)
    if kind == "join":
        return env.atoms.union_blocks(atoms, factor)
    if kind == "column":
        cols, sub = factor
        grid = atoms.reshape(-1, cols, sub)  # [rows, cols, sub]: one unit per column
        first = grid[0, :, 0]
        for r in range(grid.shape[0]):
            for s in range(sub):
                if r or s:
                    env.union(first, grid[r, :, s])
        return first.copy()
    if kind == "tile":
        copies, width, join = factor
        units = env.atoms.union_blocks(atoms, join) if join > 1 else atoms
        return np.tile(np.repeat(units, width), copies)
    if kind == "untile":
        copies, inner_kind, inner_factor = factor
        grid = atoms.reshape(copies, -1)
        for row in grid[1:]:
            env.union(grid[0], row)
        return _apply(env, grid[0].copy(), inner_kind, inner_factor)
    return atoms


def resolve_target(in_shape: list[Mono | None], target: list[int], allowzero: bool):
    """Reshape's output dims from its input dims and constant target (0 copies, -1 infers)."""
    out: list[Mono | None] = []
    for i, v in enumerate(target):
        if v == 0 and not allowzero:
            out.append(in_shape[i] if i < len(in_shape) else None)
        else:
            out.append(None if v == -1 else (int(v), ()))
    if -1 in target:
        rest = divide(_product(in_shape),
                      _product([m for m, v in zip(out, target, strict=True) if v != -1]))
        if rest is None:
            return None
        out[target.index(-1)] = rest
    return out


def divide(total: Mono | None, known: Mono | None) -> Mono | None:
    """``total / known`` as a monomial, or None when it is not one (a static remainder, a
    symbol of ``known`` that ``total`` lacks, or either unknown)."""
    if total is None or known is None or known[0] == 0 or total[0] % known[0]:
        return None
    rest = list(total[1])
    for s in known[1]:
        if s not in rest:
            return None
        rest.remove(s)
    return total[0] // known[0], tuple(rest)


def _same_suffix(in_shape: list[Mono | None], target: list[int], a: int):
    """Axis ``a`` and every axis after it reappear unchanged at the end of a constant target:
    the outer axes may be regrouped freely (e.g. [(L*N), C] -> [L, N, C] with L*N symbolic)."""
    tail = [_static(m) for m in in_shape[a:]]
    if not tail or len(tail) > len(target) or any(t is None for t in tail):
        return None
    if target[len(target) - len(tail):] != tail:
        return None
    return len(target) - len(tail), "same", 1


class Reshape(OpRule):
    ops = ("Reshape",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x, y = node.inputs[0], node.outputs[0]
        if not env.tracked(x) and x.name not in env.folds:
            return
        target = env.const(node.inputs[1])
        in_shape, out_shape = env.shape(x), env.shape(y)
        if in_shape is None or target is None and (out_shape is None or None in out_shape):
            freeze_all(node, env, "target shape is not a known constant")
            return
        in_monos = [monomial(d) for d in in_shape]
        if target is None:  # computed (Shape pieces): the inferred output shape tells
            out_monos = [monomial(d) for d in out_shape]
        else:
            target = [int(v) for v in np.asarray(target).ravel()]
            out_monos = resolve_target(in_monos, target, bool(node.attrs.get("allowzero", 0)))
        for b, atoms in env.folds.get(x.name, {}).items():
            c = None if out_monos is None else _unfold(in_monos, out_monos, b, len(atoms))
            if c is not None:
                env.fold_readers.add((node.name, x.name))
                env.set(y, c, atoms)
        for a, atoms in env.tracked(x).items():
            where = (None if out_monos is None else
                     map_axis(in_monos, out_monos, a, apart=lambda b: taken_apart(y, b)))
            if where is None and out_monos is not None:
                b = _fold(in_monos, out_monos, a)
                if b is not None:  # heads into a symbolic batch; an unfold must follow
                    env.folds.setdefault(y.name, {})[b] = atoms
                    continue
            if where is None and target is not None:
                where = _same_suffix(in_monos, target, a)
            if where is None or (target is not None and target[where[0]] == 0
                                 and where[0] != a):
                env.freeze(atoms, f"Reshape {node.name}: channel axis {a} is scattered")
                continue
            b, kind, factor = where
            env.set(y, b, _apply(env, atoms, kind, factor))

    def rewrite(self, node: gs.Node, rw: Rewriter) -> None:
        y = node.outputs[0]
        value = const_value(node.inputs[1])
        target = None if value is None else np.array(value, dtype=np.int64).ravel()
        entries = {}
        for b in range(len(y.shape or [])):
            keep = rw.keep(y, b)
            # a constant 0 copies the input's (already cut) size; a computed entry is set
            if keep is not None and (target is None or target[b] > 0):
                entries[b] = int(keep.sum())
        if entries:
            rw.set_entries(node, 1, entries)


class Flatten(OpRule):
    ops = ("Flatten",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x, y = node.inputs[0], node.outputs[0]
        in_shape = env.shape(x)
        if not env.tracked(x):
            return
        if in_shape is None:
            freeze_all(node, env, "input shape unknown")
            return
        axis = normalize_axis(int(node.attrs.get("axis", 1)), len(in_shape))
        in_monos = [monomial(d) for d in in_shape]
        out_monos = [_product(in_monos[:axis]), _product(in_monos[axis:])]
        for a, atoms in env.tracked(x).items():
            where = map_axis(in_monos, out_monos, a)
            if where is None:
                env.freeze(atoms, f"Flatten {node.name}: channel axis {a} is scattered")
                continue
            b, kind, factor = where
            env.set(y, b, _apply(env, atoms, kind, factor))


class Transpose(OpRule):
    ops = ("Transpose",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        rank = env.rank(x)
        if rank is None:
            freeze_all(node, env, "rank unknown")
            return
        perm = list(node.attrs.get("perm", list(reversed(range(rank)))))
        for a, atoms in env.tracked(x).items():
            env.set(node.outputs[0], perm.index(a), atoms)
        for a, atoms in env.folds.get(x.name, {}).items():
            env.fold_readers.add((node.name, x.name))
            env.folds.setdefault(node.outputs[0].name, {})[perm.index(a)] = atoms


class Squeeze(OpRule):
    ops = ("Squeeze",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        shape = env.shape(x)
        axes = attr_or_input_ints(node, env, "axes", 1)
        if shape is None or axes is None:
            freeze_all(node, env, "squeezed axes unknown")
            return
        rank = len(shape)
        gone = {normalize_axis(a, rank) for a in axes} if axes else {
            i for i, d in enumerate(shape) if d == 1
        }
        for a, atoms in env.tracked(x).items():
            if a in gone:
                env.freeze(atoms, f"Squeeze {node.name}: squeezes channel axis {a}")
            elif not axes:  # (normalization names the axes where every size is known)
                env.freeze(atoms, f"Squeeze {node.name} without axes: a channel axis cut to "
                                  "one channel would be dropped")
            else:
                env.set(node.outputs[0], a - sum(1 for g in gone if g < a), atoms)


class Unsqueeze(OpRule):
    ops = ("Unsqueeze",)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        rank = env.rank(x)
        axes = attr_or_input_ints(node, env, "axes", 1)
        if rank is None or not axes:
            freeze_all(node, env, "unsqueezed axes unknown")
            return
        out_rank = rank + len(axes)
        new = {normalize_axis(a, out_rank) for a in axes}
        kept = [i for i in range(out_rank) if i not in new]
        for a, atoms in env.tracked(x).items():
            env.set(node.outputs[0], kept[a], atoms)
