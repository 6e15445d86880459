"""Shape, indexing and data movement: Reshape/Flatten/Transpose/Squeeze/Unsqueeze, Concat/
Split/Slice/Gather(ND), Pad, Tile/Expand/Where, Shape/ConstantOfShape/Range, Cast, Constant,
Einsum and CumSum."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .base import DTYPES, Node, axis_of, ints, register, torch_pads


def as_tensor(value) -> torch.Tensor:
    """A numpy array or Python number (an attribute) as a tensor of its own dtype."""
    return torch.from_numpy(np.array(value, copy=True))


@register("Identity")
def identity(n: Node, x: torch.Tensor) -> torch.Tensor:
    return x


@register("Dropout")
def dropout(n: Node, x: torch.Tensor, ratio=None, training_mode=None):
    """Inference: the identity (and an all-true mask)."""
    if training_mode is not None and bool(training_mode):
        raise NotImplementedError(f"Dropout node {n.name!r}: training_mode=true")
    return (x, torch.ones_like(x, dtype=torch.bool)) if n.n_outputs > 1 else x


_CONSTANT_TYPES = {"value": None, "value_float": np.float32, "value_floats": np.float32,
                   "value_int": np.int64, "value_ints": np.int64}


@register("Constant")
def constant(n: Node) -> torch.Tensor:
    for key, dtype in _CONSTANT_TYPES.items():
        if key in n.attrs:
            return as_tensor(np.asarray(n.attrs[key], dtype))
    raise NotImplementedError(f"Constant node {n.name!r}: only tensor and numeric values")


@register("ConstantOfShape")
def constant_of_shape(n: Node, shape: torch.Tensor) -> torch.Tensor:
    value = as_tensor(n.get("value", np.zeros(1, np.float32))).reshape(-1).to(shape.device)
    return value.expand(ints(shape)).clone() if shape.numel() else value.reshape(())


@register("Cast")
def cast(n: Node, x: torch.Tensor) -> torch.Tensor:
    to = n.get("to")
    if to not in DTYPES:
        raise NotImplementedError(f"Cast node {n.name!r}: target type {to}")
    return x.to(DTYPES[to])


@register("CastLike")
def cast_like(n: Node, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.to(like.dtype)


@register("Shape")
def shape_(n: Node, x: torch.Tensor) -> torch.Tensor:
    dims = list(x.shape)
    start, end = n.get("start", 0), n.get("end", len(dims))
    return torch.tensor(dims[slice(start, end)], dtype=torch.int64, device=x.device)


@register("Size")
def size(n: Node, x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


@register("Range")
def range_(n: Node, start: torch.Tensor, limit: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    count = max(0, math.ceil((limit.item() - start.item()) / delta.item()))
    return start + torch.arange(count, dtype=start.dtype, device=start.device) * delta


@register("Flatten")
def flatten(n: Node, x: torch.Tensor) -> torch.Tensor:
    axis = axis_of(n.get("axis", 1), x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@register("Reshape")
def reshape(n: Node, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    dims = ints(shape)
    if not n.get("allowzero", 0):  # 0 copies the input's dimension
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@register("Transpose")
def transpose(n: Node, x: torch.Tensor) -> torch.Tensor:
    perm = n.get("perm") or list(range(x.dim()))[::-1]
    return x.permute(*perm)


def _axes_arg(n: Node, axes: torch.Tensor | None) -> list[int] | None:
    """Squeeze/Unsqueeze axes: an attribute before opset 13, an input since."""
    return ints(axes) if n.opset >= 13 else n.get("axes")


@register("Squeeze")
def squeeze(n: Node, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    dims = _axes_arg(n, axes)
    if not dims:  # every dimension of size 1
        return x.reshape([d for d in x.shape if d != 1])
    drop = {axis_of(a, x.dim()) for a in dims}
    return x.reshape([d for i, d in enumerate(x.shape) if i not in drop])


@register("Unsqueeze")
def unsqueeze(n: Node, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    rank = x.dim() + len(_axes_arg(n, axes))
    for a in sorted(axis_of(a, rank) for a in _axes_arg(n, axes)):
        x = x.unsqueeze(a)
    return x


@register("Concat")
def concat(n: Node, *xs: torch.Tensor) -> torch.Tensor:
    return torch.cat(xs, axis_of(n.get("axis"), xs[0].dim()))


@register("Split")
def split(n: Node, x: torch.Tensor, sizes: torch.Tensor | None = None):
    axis = axis_of(n.get("axis", 0), x.dim())
    parts = ints(sizes) if n.opset >= 13 else n.get("split")
    if not parts:  # equal parts; with num_outputs (opset 18) the last may be smaller
        count = n.get("num_outputs", n.n_outputs)
        chunk = -(-x.shape[axis] // count)
        parts = [chunk] * (count - 1) + [x.shape[axis] - chunk * (count - 1)]
    return tuple(torch.split(x, parts, axis))


def _slice_axis(x: torch.Tensor, axis: int, start: int, end: int, step: int) -> torch.Tensor:
    dim = x.shape[axis]
    start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    if step == 1:
        return x.narrow(axis, start, max(0, end - start))
    if (end - start) * step <= 0:
        return x.narrow(axis, 0, 0)
    return x.index_select(axis, torch.arange(start, end, step, device=x.device))


@register("Slice")
def slice_(n: Node, x: torch.Tensor, starts=None, ends=None, axes=None, steps=None):
    if n.opset < 10:  # attributes before opset 10
        starts, ends, axes = n.get("starts"), n.get("ends"), n.get("axes")
    starts, ends, axes, steps = ints(starts), ints(ends), ints(axes), ints(steps)
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)
    for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
        x = _slice_axis(x, axis_of(a, x.dim()), s, e, st)
    return x


@register("Gather")
def gather(n: Node, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    axis = axis_of(n.get("axis", 0), x.dim())
    idx = torch.where(idx < 0, idx + x.shape[axis], idx).long()
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]))


@register("GatherElements")
def gather_elements(n: Node, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    axis = axis_of(n.get("axis", 0), x.dim())
    return torch.gather(x, axis, torch.where(idx < 0, idx + x.shape[axis], idx).long())


@register("GatherND")
def gather_nd(n: Node, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``idx[..., k]`` indexes the k axes after the first ``batch_dims`` (shared by both)."""
    b = n.get("batch_dims", 0)
    k = idx.shape[-1]
    lead = idx.shape[:-1]  # (the batch axes, then the index's own)
    xs = x.reshape(-1, *x.shape[b:])  # the batch axes as one
    ix = idx.long().reshape(xs.shape[0], -1, k)
    sizes = torch.tensor(x.shape[b:b + k], dtype=torch.long, device=idx.device)
    ix = torch.where(ix < 0, ix + sizes, ix)
    rows = torch.arange(xs.shape[0], device=x.device).unsqueeze(1).expand(ix.shape[:2])
    out = xs[(rows, *ix.unbind(-1))]  # [batch, picks, the axes not indexed]
    return out.reshape(*lead, *x.shape[b + k:])


def _pad_index(size: int, before: int, after: int, mode: str,
               device: torch.device) -> torch.Tensor:
    """Source positions of an axis padded by ``before``/``after`` in a non-constant mode."""
    pos = torch.arange(-before, size + after, device=device)
    if mode == "edge":
        return pos.clamp(0, size - 1)
    if mode == "wrap":
        return pos.remainder(size)
    if size == 1:  # reflect of a single element
        return torch.zeros_like(pos)
    period = 2 * (size - 1)
    pos = pos.remainder(period)
    return torch.where(pos >= size, period - pos, pos)


@register("Pad")
def pad(n: Node, x: torch.Tensor, pads=None, value=None, axes=None) -> torch.Tensor:
    mode = n.get("mode", "constant")
    if n.opset < 11:  # pads and value were attributes
        pads, value = n.get("pads"), n.get("value", 0.0)
    pads = ints(pads)
    value = 0 if value is None or (torch.is_tensor(value) and not value.numel()) else value
    rank = x.dim()
    axes = [axis_of(a, rank) for a in ints(axes)] if axes is not None else list(range(rank))
    begin, end = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        begin[a], end[a] = pads[i], pads[i + len(axes)]
    if mode == "constant":
        fill = value.item() if torch.is_tensor(value) else value
        return F.pad(x, torch_pads(begin, end), value=fill)
    if mode not in ("reflect", "edge", "wrap"):
        raise NotImplementedError(f"Pad node {n.name!r}: mode {mode!r}")
    for a in range(rank):
        b, e = begin[a], end[a]
        if b < 0 or e < 0:  # negative pads crop first
            x = x.narrow(a, max(0, -b), x.shape[a] - max(0, -b) - max(0, -e))
            b, e = max(0, b), max(0, e)
        if b or e:
            x = x.index_select(a, _pad_index(x.shape[a], b, e, mode, x.device))
    return x


@register("Expand")
def expand(n: Node, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(ints(shape))))


@register("Tile")
def tile(n: Node, x: torch.Tensor, repeats: torch.Tensor) -> torch.Tensor:
    return x.repeat(*ints(repeats)) if x.dim() else x


@register("Where")
def where(n: Node, cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(cond.bool(), a, b)


@register("Einsum")
def einsum(n: Node, *xs: torch.Tensor) -> torch.Tensor:
    """torch.einsum reads ONNX's equations as they are (ellipses, repeated letters, and the
    implicit output: the ellipsis's axes, then the letters used once, sorted) except for
    spaces, which ONNX allows."""
    return torch.einsum("".join(n.get("equation").split()), *xs)


@register("CumSum")
def cumsum(n: Node, x: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """Running sums along ``axis``, from the end with ``reverse``. ``exclusive`` shifts the
    input by one (a leading 0) rather than subtracting x from the inclusive sums, which
    would round twice."""
    dim = axis_of(int(axis.reshape(-1)[0]), x.dim())
    if n.get("reverse", 0):
        x = x.flip(dim)
    if n.get("exclusive", 0):
        first = torch.zeros_like(x.narrow(dim, 0, min(1, x.shape[dim])))
        x = torch.cat([first, x.narrow(dim, 0, max(0, x.shape[dim] - 1))], dim)
    y = torch.cumsum(x, dim, dtype=x.dtype)  # integers keep their type (torch would widen)
    return y.flip(dim) if n.get("reverse", 0) else y
