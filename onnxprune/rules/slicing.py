"""Ops that cut or assemble the channel axis: Concat, Split, Slice, Gather; and ops that must
leave it alone: Pad, Resize/Upsample, Shape."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import const_value, input_or_none, normalize_axis
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
        if rank is None or params is None:
            freeze_all(node, env, "slice bounds are not constants")
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
        starts, ends, axes, _ = _slice_params(node, opset)
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
        read = _read_dims(node.outputs[0], end - start)
        for a, atoms in env.tracked(x).items():
            if start <= a < end and (read is None or a - start in read):
                env.freeze(atoms, f"Shape {node.name}: reads the size of channel axis {a}")


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
