"""ONNX operators (default domain, opset 11-21) as torch functions, keyed by op type.

An op is ``fn(node, *inputs)``: ``node`` carries the attributes, the opset and the number of
outputs; missing optional inputs are ``None`` (or simply not passed when trailing). It returns
one tensor or a tuple (one per output). Integer tensors that describe shapes or indices stay
tensors, so shape subgraphs (``Shape -> Gather -> Concat -> Reshape``) run on the actual batch.
"""

from . import elementwise, layers, recurrent, resize, tensor  # noqa: F401 - each registers its ops
from .base import DTYPES, OPS, Node, OpFn, axis_of, ints, register, torch_pads

__all__ = ["DTYPES", "OPS", "Node", "OpFn", "axis_of", "ints", "register", "torch_pads"]
