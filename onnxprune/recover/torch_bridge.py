"""Run an ONNX graph with torch, so that its weights can be trained with autograd.

``TorchGraph(model)`` turns every floating-point initializer into a ``torch.nn.Parameter``
and executes the nodes in topological order with the torch ops of ``recover.ops``.
``write_back(model)`` puts the (trained) parameter values back into a copy of the model; the
graph itself is never touched. The module runs where its tensors are (``g.to("cuda")``).

>>> g = TorchGraph(model)                                   # doctest: +SKIP
>>> (y,) = g(torch.from_numpy(x))                           # doctest: +SKIP
>>> tuned = g.write_back(model)                             # doctest: +SKIP
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from ..ir.runtime import default_opset
from ..ir.weights import Skeleton
from ..ir.weights import proto as model_proto
from .ops import OPS, Node
from .ops.tensor import constant

__all__ = ["TorchGraph"]

Value = torch.Tensor | np.ndarray | float | int


def _attributes(node: onnx.NodeProto) -> dict:
    """Attribute values as Python objects: strings decoded, tensors as numpy arrays."""
    out = {}
    for a in node.attribute:
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            raise NotImplementedError(
                f"{node.op_type} node {node.name!r}: subgraph attributes are not supported")
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode() for s in v]
        out[a.name] = v
    return out


def _toposort(nodes: Sequence[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Kahn's order (stable: the file's order where it is already valid)."""
    producers = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps = [{producers[x] for x in n.input if x and x not in available and x in producers}
            for n in nodes]
    users: dict[int, list[int]] = {}
    for i, ds in enumerate(deps):
        for d in ds:
            users.setdefault(d, []).append(i)
    waiting = [len(ds) for ds in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users.get(i, []):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        raise ValueError("the graph has a cycle")
    return [nodes[i] for i in order]


_RESERVED = frozenset(dir(torch.nn.ParameterDict))  # attribute names a key must not shadow


def _key(name: str, taken: set[str]) -> str:
    """A ParameterDict / buffer key for ``name``: only ``[A-Za-z0-9_]``, unique."""
    base = re.sub(r"\W", "_", name) or "_"
    base = f"_{base}" if base[0].isdigit() else base
    key, i = base, 1
    while key in taken or key in _RESERVED:
        key, i = f"{base}_{i}", i + 1
    taken.add(key)
    return key


def _as_torch(value: Value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    arr = np.asarray(value)
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


class _Step:
    """One node to execute: the op, its inputs/outputs, and the tensors dead after it."""

    __slots__ = ("node", "fn", "inputs", "outputs", "release")

    def __init__(self, node: Node, fn, inputs: list[str], outputs: list[str]):
        self.node, self.fn, self.inputs, self.outputs = node, fn, inputs, outputs
        self.release: list[str] = []


class TorchGraph(torch.nn.Module):
    """An ONNX graph (default domain, opset 11-21) as a torch module.

    Float initializers are parameters in ``self.params`` (keys sanitized; ``param_names`` maps
    a key back to its initializer); other initializers and ``Constant`` nodes are buffers.
    ``forward(*inputs, **named_inputs)`` returns a tuple with one tensor per graph output.
    Unsupported ops raise ``NotImplementedError`` at construction, naming the op and node.
    """

    def __init__(self, model: onnx.ModelProto | Skeleton):
        super().__init__()
        arrays = model.arrays if isinstance(model, Skeleton) else {}
        model = model_proto(model)
        g = model.graph
        self.opset = default_opset(model) or onnx.defs.onnx_opset_version()
        self.params = torch.nn.ParameterDict()
        self.param_names: dict[str, str] = {}  # ParameterDict key -> initializer name
        self._consts = torch.nn.Module()
        self._const_keys: dict[str, str] = {}  # tensor name -> buffer key
        taken: set[str] = set()
        for init in g.initializer:
            arr = arrays.get(init.name)
            arr = numpy_helper.to_array(init) if arr is None else arr
            t = _as_torch(np.array(arr))  # its own copy: torch may train it
            key = _key(init.name, taken)
            if t.is_floating_point():
                self.params[key] = torch.nn.Parameter(t)
                self.param_names[key] = init.name
            else:
                self._consts.register_buffer(key, t)
                self._const_keys[init.name] = key
        self._key_of = {name: key for key, name in self.param_names.items()}
        inits = {i.name for i in g.initializer}
        self.input_names = [i.name for i in g.input if i.name not in inits]
        self.output_names = [o.name for o in g.output]
        self._steps = self._plan(g, inits | set(self.input_names), taken)

    def _plan(self, g: onnx.GraphProto, available: set[str], taken: set[str]) -> list[_Step]:
        steps = []
        for proto in _toposort(list(g.node), available):
            if proto.domain not in ("", "ai.onnx"):
                raise NotImplementedError(
                    f"op {proto.domain}::{proto.op_type} (node {proto.name!r}) is not supported")
            if proto.op_type not in OPS:
                raise NotImplementedError(
                    f"op {proto.op_type} (node {proto.name!r}) is not supported")
            node = Node(proto.op_type, proto.name, self.opset, len(proto.output),
                        _attributes(proto))
            if proto.op_type == "Constant":  # evaluated once, kept as a buffer
                key = _key(proto.output[0], taken)
                self._consts.register_buffer(key, constant(node))
                self._const_keys[proto.output[0]] = key
                continue
            steps.append(_Step(node, OPS[proto.op_type], list(proto.input), list(proto.output)))
        last_use = {}
        for i, step in enumerate(steps):
            for name in step.inputs:
                last_use[name] = i
        for name, i in last_use.items():
            if name not in self.output_names:
                steps[i].release.append(name)
        return steps

    # -- running ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the graph runs: its tensors' device (``graph.to("cuda")`` moves them); feeds
        are moved there, and every op makes its tensors on its inputs' device."""
        for t in self.params.values():
            return t.device
        for t in self._consts.buffers():
            return t.device
        return torch.device("cpu")

    def param(self, name: str) -> torch.nn.Parameter:
        """The parameter of initializer ``name``."""
        return self.params[self._key_of[name]]

    def initializer_names(self) -> list[str]:
        """The initializers that are parameters, in graph order."""
        return list(self.param_names.values())

    def node_outputs(self) -> list[str]:
        """Every tensor a node computes (``Constant`` nodes excluded), in execution order."""
        return [o for step in self._steps for o in step.outputs if o]

    def run(self, feeds: Mapping[str, Value], names: Sequence[str] | None = None
            ) -> list[torch.Tensor]:
        """The tensors ``names`` (default: the graph outputs) for the inputs ``feeds``; any
        node output can be asked for (e.g. an intermediate activation)."""
        names = list(self.output_names if names is None else names)
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"missing graph input(s): {', '.join(missing)}")
        env: dict[str, torch.Tensor] = {n: getattr(self._consts, k)
                                        for n, k in self._const_keys.items()}
        env.update((self.param_names[k], p) for k, p in self.params.items())
        device = self.device
        env.update((n, _as_torch(v).to(device)) for n, v in feeds.items())
        keep = set(names)
        for step in self._steps:
            args = [env[n] if n else None for n in step.inputs]
            try:
                result = step.fn(step.node, *args)
            except (NotImplementedError, torch.cuda.OutOfMemoryError):
                raise  # (what callers catch by type)
            except Exception as err:  # name the node that failed
                raise RuntimeError(f"{step.node.op_type} node {step.node.name!r}: {err}") from err
            outs = result if isinstance(result, tuple) else (result,)
            for n, v in zip(step.outputs, outs, strict=False):
                if n:
                    env[n] = v
            for n in step.release:
                if n not in keep:
                    env.pop(n, None)
        unknown = [n for n in names if n not in env]
        if unknown:
            raise KeyError(f"no tensor named {', '.join(unknown)} in the graph")
        return [env[n] for n in names]

    def forward(self, *inputs: Value, **named: Value) -> tuple[torch.Tensor, ...]:
        if len(inputs) > len(self.input_names):
            raise TypeError(f"{len(inputs)} inputs for {len(self.input_names)} graph inputs")
        feeds = dict(zip(self.input_names, inputs, strict=False))
        overlap = set(feeds) & set(named)
        if overlap:
            raise TypeError(f"input(s) given twice: {', '.join(sorted(overlap))}")
        feeds.update(named)
        return tuple(self.run(feeds))

    # -- back to ONNX -------------------------------------------------------------------------
    def write_back(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """A copy of ``model`` whose float initializers hold the current parameter values
        (same names, shapes and dtypes). Initializers whose value did not change keep their
        exact bytes; nodes, inputs, outputs and everything else are untouched."""
        out = onnx.ModelProto()
        out.CopyFrom(model)
        found = set()
        for init in out.graph.initializer:
            key = self._key_of.get(init.name)
            if key is None:
                continue
            found.add(init.name)
            old = numpy_helper.to_array(init)
            new = self.params[key].detach().cpu()
            if tuple(new.shape) != old.shape:
                raise ValueError(f"initializer {init.name!r}: shape {old.shape} in the model, "
                                 f"{tuple(new.shape)} in the graph")
            new = new.numpy().astype(old.dtype)
            if new.tobytes() == old.tobytes():
                continue
            doc = init.doc_string
            init.CopyFrom(numpy_helper.from_array(new, init.name))
            init.doc_string = doc
        missing = set(self._key_of) - found
        if missing:
            raise ValueError(f"the model lacks initializer(s) {', '.join(sorted(missing))}")
        return out
