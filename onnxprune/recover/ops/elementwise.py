"""Elementwise arithmetic, activations, comparisons and logic, and reductions."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .base import OPS, Node, axis_of, ints, register

# -- arithmetic -------------------------------------------------------------------------------


def _binary(fn):
    return lambda n, a, b: fn(a, b)


for _op, _fn in {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Equal": torch.eq,
    "Greater": torch.gt,
    "Less": torch.lt,
    "GreaterOrEqual": torch.ge,
    "LessOrEqual": torch.le,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
}.items():
    OPS[_op] = _binary(_fn)


@register("Div")
def div(n: Node, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # integer division truncates toward zero, as in C
    return a / b if a.is_floating_point() else torch.div(a, b, rounding_mode="trunc")


@register("Pow")
def pow_(n: Node, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if b.numel() == 1 and not b.requires_grad and a.is_floating_point() and float(b) == 2.0:
        return a * a  # a decomposed LayerNorm's square: pow's backward costs 3x a product's
    return torch.pow(a, b).to(a.dtype)  # the result has the base's type


@register("Mod")
def mod(n: Node, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # fmod=0: the sign of the divisor (Python's %); fmod=1: the sign of the dividend (C fmod)
    return torch.fmod(a, b) if n.get("fmod", 0) else torch.remainder(a, b)


def _variadic(fn):
    return lambda n, *xs: functools.reduce(fn, xs)


OPS["Max"] = _variadic(torch.maximum)
OPS["Min"] = _variadic(torch.minimum)
OPS["Sum"] = _variadic(torch.add)
OPS["Mean"] = lambda n, *xs: functools.reduce(torch.add, xs) / len(xs)

# -- unary ops and activations ----------------------------------------------------------------


def _unary(fn):
    return lambda n, x: fn(x)


for _op, _fn in {
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Exp": torch.exp,
    "Log": torch.log,
    "Sqrt": torch.sqrt,
    "Reciprocal": torch.reciprocal,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Round": torch.round,  # half to even, as ONNX
    "Sign": torch.sign,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Tan": torch.tan,
    "Asin": torch.asin,
    "Acos": torch.acos,
    "Atan": torch.atan,
    "Sinh": torch.sinh,
    "Cosh": torch.cosh,
    "Asinh": torch.asinh,
    "Acosh": torch.acosh,
    "Atanh": torch.atanh,
    "IsNaN": torch.isnan,
    "Erf": torch.erf,
    "Not": torch.logical_not,
    "Relu": torch.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Softplus": F.softplus,
    "Softsign": lambda x: x / (1 + x.abs()),
    "Mish": lambda x: x * torch.tanh(F.softplus(x)),
}.items():
    OPS[_op] = _unary(_fn)


@register("LeakyRelu")
def leaky_relu(n: Node, x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, n.get("alpha", 0.01))


@register("Elu")
def elu(n: Node, x: torch.Tensor) -> torch.Tensor:
    return F.elu(x, n.get("alpha", 1.0))


@register("Celu")
def celu(n: Node, x: torch.Tensor) -> torch.Tensor:
    return F.celu(x, n.get("alpha", 1.0))


@register("Selu")
def selu(n: Node, x: torch.Tensor) -> torch.Tensor:
    alpha = n.get("alpha", 1.67326319217681884765625)
    gamma = n.get("gamma", 1.05070102214813232421875)
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@register("ThresholdedRelu")
def thresholded_relu(n: Node, x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > n.get("alpha", 1.0), x, torch.zeros_like(x))


@register("PRelu")
def prelu(n: Node, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    return torch.where(x < 0, x * slope, x)  # slope broadcasts numpy-style


@register("HardSigmoid")
def hard_sigmoid(n: Node, x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x * n.get("alpha", 0.2) + n.get("beta", 0.5), 0.0, 1.0)


@register("HardSwish")
def hard_swish(n: Node, x: torch.Tensor) -> torch.Tensor:
    return x * torch.clamp(x * (1.0 / 6.0) + 0.5, 0.0, 1.0)


@register("Gelu")
def gelu(n: Node, x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate=n.get("approximate", "none"))


@register("IsInf")
def is_inf(n: Node, x: torch.Tensor) -> torch.Tensor:
    # each sign can be switched off; with both off nothing is flagged
    flags = torch.zeros_like(x, dtype=torch.bool)
    if n.get("detect_positive", 1):
        flags |= x == float("inf")
    if n.get("detect_negative", 1):
        flags |= x == float("-inf")
    return flags


@register("Shrink")
def shrink(n: Node, x: torch.Tensor) -> torch.Tensor:
    """x - bias above lambd, x + bias below -lambd, 0 between; integer inputs get the float
    result truncated back to their type, as onnxruntime casts it."""
    bias, lambd = n.get("bias", 0.0), n.get("lambd", 0.5)
    y = torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))
    return y.to(x.dtype)


@register("Clip")
def clip(n: Node, x: torch.Tensor, lo: torch.Tensor | None = None,
         hi: torch.Tensor | None = None) -> torch.Tensor:
    if n.opset < 11:  # bounds were attributes
        lo, hi = n.get("min"), n.get("max")
    if lo is not None:
        x = torch.maximum(x, torch.as_tensor(lo, dtype=x.dtype, device=x.device))
    if hi is not None:
        x = torch.minimum(x, torch.as_tensor(hi, dtype=x.dtype, device=x.device))
    return x


# -- reductions -------------------------------------------------------------------------------

_REDUCE = {
    "ReduceMean": lambda x, d, k: x.mean(d, keepdim=k),
    "ReduceSum": lambda x, d, k: x.sum(d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, d, keepdim=k),
    "ReduceMin": lambda x, d, k: torch.amin(x, d, keepdim=k),
    "ReduceProd": lambda x, d, k: _prod(x, d, k),
    "ReduceL1": lambda x, d, k: x.abs().sum(d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sqrt((x * x).sum(d, keepdim=k)),
    "ReduceSumSquare": lambda x, d, k: (x * x).sum(d, keepdim=k),
    "ReduceLogSum": lambda x, d, k: torch.log(x.sum(d, keepdim=k)),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, d, keepdim=k),
}


def _prod(x: torch.Tensor, dims: list[int], keep: bool) -> torch.Tensor:
    for d in sorted(dims, reverse=True):
        x = x.prod(d, keepdim=keep)
    return x


def _reduce(n: Node, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    # axes became an input in opset 13 for ReduceSum and in opset 18 for the others
    as_input = n.opset >= (13 if n.op_type == "ReduceSum" else 18)
    dims = ints(axes) if as_input else n.get("axes")
    if not dims:
        if as_input and n.get("noop_with_empty_axes", 0):
            return x
        dims = list(range(x.dim()))
    dims = sorted({axis_of(d, x.dim()) for d in dims})
    if not dims:  # a scalar: nothing to reduce
        return x
    return _REDUCE[n.op_type](x, dims, bool(n.get("keepdims", 1)))


for _op in _REDUCE:
    OPS[_op] = _reduce


@register("ArgMax", "ArgMin")
def arg_extreme(n: Node, x: torch.Tensor) -> torch.Tensor:
    axis = axis_of(n.get("axis", 0), x.dim())
    keep = bool(n.get("keepdims", 1))
    fn = torch.argmax if n.op_type == "ArgMax" else torch.argmin
    if n.get("select_last_index", 0):
        return x.shape[axis] - 1 - fn(x.flip(axis), axis, keepdim=keep)
    return fn(x, axis, keepdim=keep)
