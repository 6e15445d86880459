"""Layers: Conv, ConvTranspose, Gemm, MatMul, normalizations, softmax and pools."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...rules.layers import conv_pads
from .base import DTYPES, Node, axis_of, register, torch_pads

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _spatial(n: Node, nd: int, kernel: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """kernel_shape, strides and dilations with their defaults."""
    return ([int(k) for k in n.get("kernel_shape") or kernel], list(n.get("strides") or [1] * nd),
            list(n.get("dilations") or [1] * nd))


def _pads(n: Node, sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
          dilations: Sequence[int]) -> tuple[list[int], list[int]]:
    """Begin and end pads of Conv and the pools: explicit ``pads`` or ``auto_pad``."""
    auto = n.get("auto_pad", "NOTSET")
    got = conv_pads(auto, n.get("pads"), sizes, kernel, strides, dilations)
    if got is None:
        raise NotImplementedError(f"{n.op_type} node {n.name!r}: auto_pad {auto!r}")
    return got


def _crop(x: torch.Tensor, starts: Sequence[int], lengths: Sequence[int]) -> torch.Tensor:
    """``x[:, :, starts[0]:starts[0]+lengths[0], ...]``."""
    for i, (s, n) in enumerate(zip(starts, lengths, strict=True)):
        x = x.narrow(2 + i, s, n)
    return x


@register("Conv")
def conv(n: Node, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    nd = x.dim() - 2
    kernel, strides, dilations = _spatial(n, nd, w.shape[2:])
    begin, end = _pads(n, x.shape[2:], kernel, strides, dilations)
    padding: list[int] | int = begin
    if begin != end:  # asymmetric: pad explicitly
        x, padding = F.pad(x, torch_pads(begin, end)), 0
    return _CONV[nd](x, w, b, strides, padding, dilations, n.get("group", 1))


def _conv_transpose_pads(n: Node, sizes: Sequence[int], full: Sequence[int],
                         out_pad: Sequence[int]) -> tuple[list[int], list[int]]:
    """Begin/end crop of ConvTranspose's full output: from ``output_shape`` (or, with
    ``auto_pad`` SAME_*, an output of input size x stride), else ``pads``."""
    nd = len(sizes)
    auto = n.get("auto_pad", "NOTSET")
    shape = n.get("output_shape")
    if not shape and auto in ("SAME_UPPER", "SAME_LOWER"):
        shape = [size * s for size, s in zip(sizes, n.get("strides") or [1] * nd, strict=True)]
    if shape:
        begin, end = [], []
        for target, f, op in zip(shape[-nd:], full, out_pad, strict=True):
            total = max(0, f + op - target)
            small, large = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else large)
            end.append(large if auto == "SAME_UPPER" else small)
        return begin, end
    if auto == "VALID":
        return [0] * nd, [0] * nd
    pads = list(n.get("pads") or [0] * 2 * nd)
    return pads[:nd], pads[nd:]


@register("ConvTranspose")
def conv_transpose(n: Node, x: torch.Tensor, w: torch.Tensor,
                   b: torch.Tensor | None = None) -> torch.Tensor:
    """The full transposed convolution, zero ``output_padding`` appended, then the pads
    cropped: exact for any pads (also asymmetric) and output padding."""
    nd = x.dim() - 2
    _, strides, dilations = _spatial(n, nd, w.shape[2:])
    out_pad = list(n.get("output_padding") or [0] * nd)
    y = _CONV_T[nd](x, w, None, strides, 0, 0, n.get("group", 1), dilations)
    full = list(y.shape[2:])
    begin, end = _conv_transpose_pads(n, x.shape[2:], full, out_pad)
    if any(out_pad):
        y = F.pad(y, torch_pads([0] * nd, out_pad))
    lengths = [f + op - bg - e for f, op, bg, e in zip(full, out_pad, begin, end, strict=True)]
    y = _crop(y, begin, lengths)
    return y if b is None else y + b.reshape(1, -1, *[1] * nd)


@register("Gemm")
def gemm(n: Node, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    a = a.t() if n.get("transA", 0) else a
    b = b.t() if n.get("transB", 0) else b
    alpha, beta = n.get("alpha", 1.0), n.get("beta", 1.0)
    y = a @ b
    if alpha != 1.0:
        y = alpha * y
    if c is not None:
        y = y + (c if beta == 1.0 else beta * c)
    return y


@register("MatMul")
def matmul(n: Node, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.matmul(a, b)


# -- normalization ----------------------------------------------------------------------------


def _per_channel(t: torch.Tensor, rank: int) -> torch.Tensor:
    return t.reshape(1, -1, *[1] * (rank - 2))


@register("BatchNormalization")
def batch_norm(n: Node, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
               mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Inference form, written out so that every input gets a gradient."""
    if n.get("training_mode", 0):
        raise NotImplementedError(f"BatchNormalization node {n.name!r}: training_mode=1")
    r = x.dim()
    inv = scale / torch.sqrt(var + n.get("epsilon", 1e-5))
    return (x - _per_channel(mean, r)) * _per_channel(inv, r) + _per_channel(bias, r)


@register("InstanceNormalization")
def instance_norm(n: Node, x: torch.Tensor, scale: torch.Tensor,
                  bias: torch.Tensor) -> torch.Tensor:
    dims = list(range(2, x.dim()))
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    y = (x - mean) / torch.sqrt(var + n.get("epsilon", 1e-5))
    return y * _per_channel(scale, x.dim()) + _per_channel(bias, x.dim())


@register("LayerNormalization")
def layer_norm(n: Node, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
    axis = axis_of(n.get("axis", -1), x.dim())
    dims = list(range(axis, x.dim()))
    shape = tuple(x.shape[axis:])
    if n.n_outputs == 1 and x.dtype == torch.float32 and scale.dtype == x.dtype and all(
            t is None or tuple(t.shape) == shape for t in (scale, bias)):
        # torch's kernel (one pass forward and backward, where the steps below are eight)
        return F.layer_norm(x, shape, scale, bias, n.get("epsilon", 1e-5))
    xs = x.float() if n.get("stash_type", 1) == 1 and x.dtype in (torch.float16,
                                                                 torch.bfloat16) else x
    mean = xs.mean(dims, keepdim=True)
    inv_std = torch.rsqrt(((xs - mean) ** 2).mean(dims, keepdim=True) + n.get("epsilon", 1e-5))
    y = ((xs - mean) * inv_std).to(x.dtype) * scale
    if bias is not None:
        y = y + bias
    return (y, mean, inv_std)[: n.n_outputs] if n.n_outputs > 1 else y


@register("GroupNormalization")
def group_norm(n: Node, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """As ONNX's function body, which onnxruntime runs: the variance is E[x^2] - E[x]^2 over
    each group. Opset 18 scales and shifts per group, in the input's type; opset 21 per
    channel, with the statistics in ``stash_type`` and the normalized values cast back."""
    groups = n.get("num_groups")
    eps = float(np.float32(n.get("epsilon", 1e-5)))  # a float constant in the function body
    stash = DTYPES[n.get("stash_type", 1)] if n.opset >= 21 else x.dtype
    xs = x.to(stash).reshape(x.shape[0], groups, -1)
    mean = xs.mean(-1, keepdim=True)
    var = (xs * xs).mean(-1, keepdim=True) - mean * mean
    y = (xs - mean) / torch.sqrt(var + eps)
    if n.opset >= 21:  # per channel
        y = y.reshape(x.shape[0], x.shape[1], -1).to(x.dtype)
    y = scale.to(x.dtype).reshape(1, -1, 1) * y + bias.to(x.dtype).reshape(1, -1, 1)
    return y.reshape(x.shape)


def _softmax_family(fn):
    def op(n: Node, x: torch.Tensor) -> torch.Tensor:
        if n.opset >= 13:
            return fn(x, axis_of(n.get("axis", -1), x.dim()))
        # before opset 13: the input is coerced to 2-D at ``axis`` (default 1)
        axis = axis_of(n.get("axis", 1), x.dim())
        rows = math.prod(x.shape[:axis])
        return fn(x.reshape(rows, math.prod(x.shape[axis:])), 1).reshape(x.shape)

    return op


def _hardmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    return F.one_hot(x.argmax(dim), x.shape[dim]).movedim(-1, dim).to(x.dtype)


register("Softmax")(_softmax_family(lambda x, d: torch.softmax(x, d)))
register("LogSoftmax")(_softmax_family(lambda x, d: torch.log_softmax(x, d)))
register("Hardmax")(_softmax_family(_hardmax))


# -- pools ------------------------------------------------------------------------------------


def _pool_geometry(n: Node, x: torch.Tensor):
    """kernel, strides, dilations, begin pads, end pads (grown so that the last window fits)
    and output sizes of MaxPool/AveragePool, ceil_mode included."""
    nd = x.dim() - 2
    kernel, strides, dilations = _spatial(n, nd, ())
    sizes = list(x.shape[2:])
    begin, end = _pads(n, sizes, kernel, strides, dilations)
    auto = n.get("auto_pad", "NOTSET")
    outs, grow = [], []
    for i, (size, k, s, d) in enumerate(zip(sizes, kernel, strides, dilations, strict=True)):
        eff = (k - 1) * d + 1
        span = size + begin[i] + end[i] - eff
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-size // s)
        elif n.get("ceil_mode", 0):
            out = -(-span // s) + 1
            if (out - 1) * s >= size + begin[i]:  # the last window would start in the padding
                out -= 1
        else:
            out = span // s + 1
        outs.append(out)
        grow.append(max(0, (out - 1) * s + eff - (size + begin[i] + end[i])))
    return kernel, strides, dilations, begin, end, grow, outs


@register("MaxPool")
def max_pool(n: Node, x: torch.Tensor):
    if n.n_outputs > 1:
        raise NotImplementedError(f"MaxPool node {n.name!r}: the Indices output")
    kernel, strides, dilations, begin, end, grow, outs = _pool_geometry(n, x)
    low = float("-inf") if x.is_floating_point() else torch.iinfo(x.dtype).min
    end = [e + g for e, g in zip(end, grow, strict=True)]
    y = _MAX_POOL[x.dim() - 2](F.pad(x, torch_pads(begin, end), value=low), kernel, strides, 0,
                               dilations)
    return _crop(y, [0] * len(outs), outs)


def _window_sum(x: torch.Tensor, kernel, strides, dilations) -> torch.Tensor:
    ones = torch.ones(x.shape[1], 1, *kernel, dtype=x.dtype, device=x.device)
    return _CONV[x.dim() - 2](x, ones, None, strides, 0, dilations, x.shape[1])


@register("AveragePool")
def average_pool(n: Node, x: torch.Tensor) -> torch.Tensor:
    """Window sums divided by the count of the elements that count: the input, plus the
    explicit pads with ``count_include_pad`` (never the room added for ``ceil_mode``)."""
    kernel, strides, dilations, begin, end, grow, outs = _pool_geometry(n, x)
    nd = x.dim() - 2
    full_end = [e + g for e, g in zip(end, grow, strict=True)]
    sums = _window_sum(F.pad(x, torch_pads(begin, full_end)), kernel, strides, dilations)
    mask = torch.ones(1, 1, *x.shape[2:], dtype=x.dtype, device=x.device)
    mask = F.pad(mask, torch_pads(begin, end), value=float(n.get("count_include_pad", 0)))
    mask = F.pad(mask, torch_pads([0] * nd, grow))
    counts = _window_sum(mask, kernel, strides, dilations)
    return _crop(sums / counts, [0] * nd, outs)


def _lp_root(sums: torch.Tensor, p: float) -> torch.Tensor:
    """``sums ** (1/p)``, with a zero gradient where a window sums to 0 (all zeros, e.g.
    after a Relu) instead of inf * 0 = NaN."""
    positive = sums > 0
    return torch.where(positive, torch.where(positive, sums, 1.0).pow(1.0 / p), 0.0)


@register("LpPool")
def lp_pool(n: Node, x: torch.Tensor) -> torch.Tensor:
    """(sum of |x|^p over the window)^(1/p); pads (and the room ``ceil_mode`` adds) are zeros,
    which add nothing."""
    kernel, strides, dilations, begin, end, grow, outs = _pool_geometry(n, x)
    p = float(n.get("p", 2))
    end = [e + g for e, g in zip(end, grow, strict=True)]
    powers = F.pad(torch.pow(x.abs(), p), torch_pads(begin, end))
    sums = _window_sum(powers, kernel, strides, dilations)
    return _crop(_lp_root(sums, p), [0] * len(outs), outs)


@register("GlobalLpPool")
def global_lp_pool(n: Node, x: torch.Tensor) -> torch.Tensor:
    p = float(n.get("p", 2))
    return _lp_root(torch.pow(x.abs(), p).sum(list(range(2, x.dim())), keepdim=True), p)


@register("GlobalAveragePool")
def global_average_pool(n: Node, x: torch.Tensor) -> torch.Tensor:
    return x.mean(list(range(2, x.dim())), keepdim=True)


@register("GlobalMaxPool")
def global_max_pool(n: Node, x: torch.Tensor) -> torch.Tensor:
    return torch.amax(x, list(range(2, x.dim())), keepdim=True)
