"""Resize (opset 10+) and Upsample (opset 7-9): nearest and linear, separable per axis.

Source coordinates are computed in float32 in onnxruntime's order of operations, so nearest
neighbours pick the same pixels; linear weights are exact up to rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Node, axis_of, ints, register

_MODES = ("nearest", "linear", "bilinear", "trilinear")


def _source_coords(out_len: int, in_len: int, scale: np.float32, mode: str,
                   device: torch.device) -> torch.Tensor:
    x = torch.arange(out_len, dtype=torch.float32, device=device)
    s = torch.tensor(scale, dtype=torch.float32, device=device)
    if mode == "half_pixel":
        return (x + 0.5) / s - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / s - 0.5 if out_len > 1 else torch.zeros_like(x)
    if mode == "align_corners":
        if out_len == 1:
            return torch.zeros_like(x)
        # divided by a tensor: a GPU divides by a scalar as a product with its reciprocal, 1
        # ulp off (nearest then picks another pixel in 2x upsamples such as 31 -> 62)
        return x * float(in_len - 1) / torch.tensor(float(out_len - 1), device=device)
    if mode == "asymmetric":
        return x / s
    if mode == "half_pixel_symmetric":
        adjust = np.float32(out_len) / (scale * np.float32(in_len))
        offset = np.float32(in_len) * (1 - adjust) / 2
        return offset + (x + 0.5) / s - 0.5
    raise NotImplementedError(f"coordinate_transformation_mode {mode!r}")


def _nearest(x: torch.Tensor, mode: str, downsample: bool) -> torch.Tensor:
    def round_away(v):
        return torch.sign(v) * torch.floor(v.abs() + 0.5)

    half = x == torch.floor(x) + 0.5
    if mode == "round_prefer_floor":
        return torch.where(half, torch.floor(x), round_away(x))
    if mode == "round_prefer_ceil":
        return torch.where(half, torch.ceil(x), round_away(x))
    if mode == "floor":
        return torch.floor(x)
    if mode == "ceil":
        return torch.ceil(x)
    if mode == "simple":  # Upsample and Resize-10
        return torch.ceil(x) if downsample else torch.trunc(x)
    raise NotImplementedError(f"nearest_mode {mode!r}")


def _resize_axis(x: torch.Tensor, axis: int, out_len: int, scale: np.float32, mode: str,
                 coord: str, nearest: str) -> torch.Tensor:
    in_len = x.shape[axis]
    src = _source_coords(out_len, in_len, scale, coord, x.device)
    if mode == "nearest":
        idx = _nearest(src, nearest, bool(scale < 1)).long().clamp(0, in_len - 1)
        return x.index_select(axis, idx)
    src = src.clamp(0, in_len - 1)
    lo = src.floor().long().clamp(max=in_len - 1)
    hi = (lo + 1).clamp(max=in_len - 1)
    w = (src - lo.float()).to(x.dtype).reshape([-1] + [1] * (x.dim() - axis - 1))
    a, b = x.index_select(axis, lo), x.index_select(axis, hi)
    return a * (1 - w) + b * w


def interpolate(n: Node, x: torch.Tensor, scales: list[float] | None, sizes: list[int] | None,
                coord: str, nearest: str) -> torch.Tensor:
    mode = n.get("mode", "nearest")
    if mode not in _MODES:
        raise NotImplementedError(f"{n.op_type} node {n.name!r}: mode {mode!r}")
    if n.get("antialias", 0):
        raise NotImplementedError(f"{n.op_type} node {n.name!r}: antialias")
    if n.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise NotImplementedError(f"{n.op_type} node {n.name!r}: keep_aspect_ratio_policy")
    rank = x.dim()
    axes = [axis_of(a, rank) for a in n.get("axes") or range(rank)]
    full_scales = [np.float32(1.0)] * rank
    out = list(x.shape)
    for i, a in enumerate(axes):
        if sizes:
            out[a] = sizes[i]
            full_scales[a] = np.float32(sizes[i]) / np.float32(x.shape[a])
        else:
            full_scales[a] = np.float32(scales[i])
            out[a] = int(np.float32(x.shape[a]) * full_scales[a])
    for a in range(rank):
        if out[a] != x.shape[a] or full_scales[a] != 1:
            x = _resize_axis(x, a, out[a], full_scales[a], "nearest" if mode == "nearest"
                             else "linear", coord, nearest)
    return x


def _floats(t) -> list[float] | None:
    if t is None or (torch.is_tensor(t) and not t.numel()):
        return None
    return [float(v) for v in (t.reshape(-1).tolist() if torch.is_tensor(t) else t)]


@register("Resize")
def resize(n: Node, x: torch.Tensor, *args: torch.Tensor | None) -> torch.Tensor:
    if n.opset < 11:  # Resize-10: (X, scales), asymmetric coordinates
        return interpolate(n, x, _floats(args[0]), None, "asymmetric", "simple")
    _roi, scales, sizes = (list(args) + [None] * 3)[:3]
    coord = n.get("coordinate_transformation_mode", "half_pixel")
    sizes_ = ints(sizes) if sizes is not None and sizes.numel() else None
    return interpolate(n, x, _floats(scales), sizes_, coord,
                       n.get("nearest_mode", "round_prefer_floor"))


@register("Upsample")
def upsample(n: Node, x: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
    values = _floats(scales) if scales is not None else n.get("scales")
    return interpolate(n, x, values, None, "asymmetric", "simple")
