"""Hypothesis strategies that build random, valid ONNX models from onnxprune's supported ops.

``graphs()`` grows a graph one step at a time from a pool of live tensors whose shapes are
tracked: 4-D activations ``(N, C, H, W)``, 2-D features ``(N, F)`` and 3-D sequences
``(N, T, F)`` (features last). ``N`` is an int or the symbolic ``"batch"``. Each step picks an
op that applies to some live tensor, draws its parameters and adds its outputs to the pool;
tensors nobody consumes become graph outputs (plus, sometimes, a consumed one).

Nodes are appended with ``onnxprune.zoo.builder.GraphBuilder``; the model is assembled with
the graph outputs typed from the tracked shapes, run through strict shape inference and
``onnx.checker.check_model(full_check=True)``, and the tracked static dimensions are compared
with the inferred ones: a drift in this generator fails loudly instead of producing wrong
models. Graph-level dialects are drawn too: opset 11-18 (attribute or input forms), a static or
symbolic batch, constants as initializers or ``Constant`` nodes, node names kept, blank or
repeated. The steps taken are written to ``model.doc_string``; ``describe(model)`` prints them
with the graph (no weights) for failure reports.
"""

from __future__ import annotations

import numpy as np
import onnx
from graphgen_base import MAX_C, MAX_FEATURES, MAX_HW, MIN_HW, Dim, Live
from graphgen_layers import LayerSteps
from graphgen_shapes import ShapeSteps
from hypothesis import strategies as st

from onnxprune.zoo.builder import GraphBuilder


class _Gen(LayerSteps, ShapeSteps):
    def __init__(self, draw, opset: int, batch: Dim, seed: int):
        self.draw, self.opset, self.n = draw, opset, batch
        self.b = GraphBuilder(seed=seed, opset=opset)
        self.rng = self.b.rng
        self.pool: list[Live] = []
        self.uses: dict[str, int] = {}
        self.log: list[str] = []
        self.shared: dict[tuple, str | list[str]] = {}  # constants later nodes may reuse
        self.const_nodes = False  # constants as Constant nodes instead of initializers

    # -- drawing -----------------------------------------------------------------------
    def int_(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def pick(self, options):
        return self.draw(st.sampled_from(list(options)))

    def coin(self) -> bool:
        return self.draw(st.booleans())

    # -- the pool ------------------------------------------------------------------------
    def add(self, name: str, shape, graph_input: bool = False) -> Live:
        t = Live(name, tuple(shape), graph_input)
        self.pool.append(t)
        return t

    def use(self, *ts: Live) -> None:
        for t in ts:
            self.uses[t.name] = self.uses.get(t.name, 0) + 1

    def of_rank(self, *ranks: int) -> list[Live]:
        return [t for t in self.pool if t.rank in ranks]

    def take(self, *ranks: int) -> Live:
        return self.recent(self.of_rank(*ranks))

    def recent(self, candidates: list[Live]) -> Live:
        """One of ``candidates``, shrinking towards the newest (deep chains, not wide fans)."""
        return candidates[-1 - self.int_(0, len(candidates) - 1)]

    # -- constants -----------------------------------------------------------------------
    def vec(self, shape, lo: float = -1.0, hi: float = 1.0) -> str:
        return self.const(self.rng.uniform(lo, hi, shape).astype(np.float32))

    def const(self, values: np.ndarray) -> str:
        """An initializer, or (in graphs drawn that way) a Constant node's output."""
        if not self.const_nodes:
            return self.b.const(values)
        return self.b.op("Constant", [], value=onnx.numpy_helper.from_array(np.asarray(values)))

    def weight(self, *shape: int) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        return self.const((self.rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32))

    def ints(self, values) -> str:
        return self.const(np.array(values, dtype=np.int64))

    def reshape(self, x: str, target) -> str:
        return self.b.op("Reshape", [x, self.ints(target)])

    def computed_reshape(self, x: str, rest: list[int], batch_of: str | None = None) -> str:
        """Reshape to [N, *rest] with N read from a shape at run time, as torch exports it:
        Shape -> Gather (or Slice) -> Unsqueeze -> Concat."""
        shape = self.b.op("Shape", [batch_of or x])
        if self.coin():
            n = self.b.op("Gather", [shape, self.ints(0)], axis=0)
            n = self.axes_attr_or_input("Unsqueeze", [n], [0], 13)
        else:
            n = self.b.op("Slice", [shape, self.ints([0]), self.ints([1])])
        return self.b.op("Reshape", [x, self.b.op("Concat", [n, self.ints(rest)], axis=0)])

    def empty_f(self) -> str:
        return self.const(np.zeros(0, np.float32))

    def axes_attr_or_input(self, op: str, ins: list[str], axes: list[int], since: int,
                           **attrs) -> str:
        if self.opset >= since:
            return self.b.op(op, ins + [self.ints(axes)], **attrs)
        return self.b.op(op, ins, axes=axes, **attrs)

    # -- inputs --------------------------------------------------------------------------
    def graph_inputs(self) -> None:
        for i in range(self.int_(1, 3)):
            kind = self.pick(["nchw", "nchw", "nchw", "nf", "ntf"]) if i else "nchw"
            if kind == "nchw":
                shape = (self.n, self.int_(1, 8), self.int_(MIN_HW, MAX_HW),
                         self.int_(MIN_HW, MAX_HW))
            elif kind == "nf":
                shape = (self.n, self.int_(1, 16))
            else:
                shape = (self.n, self.int_(1, 6), self.int_(1, 12))
            x = self.add(self.b.input(f"in{i}", list(shape)), shape, graph_input=True)
            if self.int_(0, 3):  # usually a stem layer, so there are channels to prune
                {4: self.conv, 2: self.gemm, 3: self.matmul}[x.rank](x)

    # -- layers that own channels --------------------------------------------------------

    def steps(self):
        """(name, applicable, action) for every op step."""
        r4, r2, r3 = self.of_rank(4), self.of_rank(2), self.of_rank(3)
        any_ = bool(r4 or r2 or r3)
        return [
            ("conv", bool(r4), self.conv),
            ("conv", bool(r4), self.conv),
            ("conv_bn", bool(r4), self.conv_bn),
            ("conv_transpose", bool(r4), self.conv_transpose),
            ("gemm", bool(r2), self.gemm),
            ("matmul", bool(r2 or r3), self.matmul),
            ("batchnorm", bool(r4 or r2), self.batchnorm),
            ("instance_norm", bool(r4), self.instance_norm),
            ("prelu", any_, self.prelu),
            ("unary", any_, self.unary),
            ("binary_const", any_, self.binary_const),
            ("residual", any_, self.residual),
            ("block", any_, self.block),
            ("softmax", any_, self.softmax),
            ("concat", any_, self.concat),
            ("split", any(t.c >= 2 for t in r4 + r2 + r3), self.split),
            ("slice", bool(r4), self.slice),
            ("pad", bool(r4), self.pad),
            ("resize", bool(r4), self.resize),
            ("pool", bool(r4), self.pool_),
            ("flatten", any(np.prod(t.shape[1:]) <= MAX_FEATURES for t in r4), self.flatten),
            ("unflatten", bool(r2), self.unflatten),
            ("channels_last_matmul", bool(r4), self.channels_last_matmul),
            ("to_sequence", bool(r4), self.to_sequence),
            ("from_sequence", bool(r3), self.from_sequence),
            ("squeeze", any(t.shape[2:] == (1, 1) for t in r4), self.squeeze),
            ("unsqueeze", bool(r2), self.unsqueeze),
            ("reduce_mean", bool(r4), self.reduce_mean),
            ("shared_conv", any(t.c <= MAX_C for t in r4), self.shared_conv),
            ("transpose_roundtrip", bool(r4), self.transpose_roundtrip),
            ("layer_norm", self.opset >= 17 and any_, self.layer_norm),
            ("arg_reduce", bool(r4), self.arg_reduce),
            ("dropout_mask", any_ and self.opset >= 12, self.dropout_mask),
            ("unsupported", bool(r4), self.unsupported),
            ("merge_channels", bool(r4), self.merge_channels),
            ("gather", bool(r4), self.gather),
        ]

    def heads(self) -> None:
        """Most leaves get a channel-mixing head, so their channels are not graph outputs."""
        for t in [t for t in self.pool if not t.graph_input and not self.uses.get(t.name)]:
            if self.int_(0, 3) == 0:
                continue
            if t.rank == 4:
                self.conv(t)
            elif t.rank == 2:
                self.gemm(t)
            else:
                self.matmul(t)

    def outputs(self) -> list[str]:
        produced = [t for t in self.pool if not t.graph_input]
        outs = [t.name for t in produced if not self.uses.get(t.name)]
        consumed = [t.name for t in produced if self.uses.get(t.name)]
        if consumed and self.int_(0, 3) == 0:
            extra = self.pick(consumed)
            outs.append(extra)
            self.log.append(f"extra output {extra}")
        return outs


def _build(g: _Gen, outputs: list[str]) -> onnx.ModelProto:
    """Like GraphBuilder.build, with the graph outputs typed from the tracked shapes (shape
    inference cannot see through a Reshape whose target is computed)."""
    shapes = {t.name: list(t.shape) for t in g.pool}
    outs = [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, shapes[o])
            for o in outputs]
    graph = onnx.helper.make_graph(g.b.nodes, "fuzz", g.b.inputs, outs, g.b.inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", g.opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def _check_shapes(model: onnx.ModelProto, pool: list[Live]) -> None:
    """The tracked static dims must match ONNX shape inference (a generator self-check)."""
    inferred = {}
    for vi in list(model.graph.value_info) + list(model.graph.output):
        if vi.type.tensor_type.HasField("shape"):
            inferred[vi.name] = [d.dim_value if d.HasField("dim_value") else None
                                 for d in vi.type.tensor_type.shape.dim]
    for t in pool:
        dims = inferred.get(t.name)
        if dims is None:
            continue
        assert len(dims) == t.rank, f"graphgen: {t.name} rank {len(dims)}, tracked {t.shape}"
        for got, want in zip(dims, t.shape, strict=True):
            assert got is None or not isinstance(want, int) or got == want, \
                f"graphgen: {t.name} inferred {dims}, tracked {t.shape}"


@st.composite
def graphs(draw, min_steps: int = 1, max_steps: int = 10,
           opsets: tuple[int, ...] = tuple(range(11, 19)),
           prefer: tuple[str, ...] = ()) -> onnx.ModelProto:
    """A random valid ONNX model over onnxprune's supported ops (see the module docstring);
    the steps named in ``prefer`` are drawn eight times as often."""
    opset = draw(st.sampled_from(opsets))
    batch: Dim = draw(st.sampled_from(["batch", 1, 2]))
    seed = draw(st.integers(0, 2**16))
    g = _Gen(draw, opset, batch, seed)
    g.const_nodes = draw(st.integers(0, 7)) == 0
    g.graph_inputs()
    for _ in range(draw(st.integers(min_steps, max_steps))):
        name, _, action = g.pick([s for s in g.steps() if s[1]
                                  for _ in range(8 if s[0] in prefer else 1)])
        action()
    g.heads()
    outputs = g.outputs()
    names = draw(st.sampled_from(["kept", "kept", "kept", "kept", "blank", "duplicate"]))
    for i, node in enumerate(g.b.nodes):  # exporters leave names empty or repeat them
        if names == "blank" or (names == "duplicate" and i % 2):
            node.name = "" if names == "blank" else g.b.nodes[i - 1].name
    if names != "kept":
        g.log.append(f"node names {names}")
    model = _build(g, outputs)
    _check_shapes(model, g.pool)
    model.doc_string = f"opset {opset}, batch {batch}, seed {seed}: " + " | ".join(g.log)
    return model


def describe(model: onnx.ModelProto) -> str:
    """The generator's step log and the graph as text without weights (for failure notes)."""
    lines = [model.doc_string]
    for node in model.graph.node:
        attrs = ", ".join(f"{a.name}={onnx.helper.get_attribute_value(a)}"
                          for a in node.attribute)
        lines.append(f"  {node.name}: {node.op_type}({', '.join(node.input)})"
                     f" -> {', '.join(node.output)} {attrs}")
    lines.append("  outputs: " + ", ".join(o.name for o in model.graph.output))
    return "\n".join(lines)
