"""ONNX operators (default domain, opset 11-21) as torch functions, keyed by op type.

An op is ``fn(node, *inputs)``: ``node`` carries the attributes, the opset and the number of
outputs; missing optional inputs are ``None`` (or simply not passed when trailing). It returns
one tensor or a tuple (one per output). Integer tensors that describe shapes or indices stay
tensors, so shape subgraphs (``Shape -> Gather -> Concat -> Reshape``) run on the actual batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from onnx import TensorProto

OpFn = Callable[..., "torch.Tensor | tuple[torch.Tensor, ...]"]
OPS: dict[str, OpFn] = {}

DTYPES: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32,
    TensorProto.DOUBLE: torch.float64,
    TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16,
    TensorProto.INT8: torch.int8,
    TensorProto.INT16: torch.int16,
    TensorProto.INT32: torch.int32,
    TensorProto.INT64: torch.int64,
    TensorProto.UINT8: torch.uint8,
    TensorProto.UINT16: torch.uint16,
    TensorProto.UINT32: torch.uint32,
    TensorProto.UINT64: torch.uint64,
    TensorProto.BOOL: torch.bool,
}


@dataclass(frozen=True)
class Node:
    """What an op sees of its node: type, name, parsed attributes, opset, output count."""

    op_type: str
    name: str
    opset: int
    n_outputs: int = 1
    attrs: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)


def register(*op_types: str) -> Callable[[OpFn], OpFn]:
    def deco(fn: OpFn) -> OpFn:
        for op in op_types:
            OPS[op] = fn
        return fn

    return deco


def ints(t: torch.Tensor | Sequence[int] | None) -> list[int] | None:
    """An integer tensor (or list) as a list of Python ints; ``None`` stays ``None``."""
    if t is None:
        return None
    if isinstance(t, torch.Tensor):
        return [int(v) for v in t.reshape(-1).tolist()]
    return [int(v) for v in t]


def axis_of(axis: int, rank: int) -> int:
    """A possibly negative axis as a non-negative one."""
    return axis + rank if axis < 0 else axis


def torch_pads(begin: Sequence[int], end: Sequence[int]) -> list[int]:
    """ONNX per-axis pads (first axis first) as ``F.pad``'s list (last axis first)."""
    out: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        out += [int(b), int(e)]
    return out
