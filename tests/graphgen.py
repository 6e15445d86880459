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

from dataclasses import dataclass

import numpy as np
import onnx
from hypothesis import strategies as st

from onnxprune.zoo.builder import GraphBuilder

MAX_C = 16  # channels a layer creates
MIN_HW, MAX_HW = 4, 8  # spatial size of graph inputs
MAX_SPATIAL = 16  # no op grows H or W beyond this
MAX_FEATURES = 1024  # flatten only up to this many features
INT64_MAX = np.iinfo(np.int64).max

Dim = int | str


@dataclass
class Live:
    """A tensor in the pool: its name, tracked shape and whether it is a graph input."""

    name: str
    shape: tuple[Dim, ...]
    graph_input: bool = False

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def feat_axis(self) -> int:
        """The axis onnxprune tracks channels on: 1 for NCHW and (N, F), last for (N, T, F)."""
        return 2 if self.rank == 3 else 1

    @property
    def c(self) -> int:
        return int(self.shape[self.feat_axis])


UNARY = [
    ("Relu", {}, 1), ("LeakyRelu", {"alpha": 0.1}, 1), ("Sigmoid", {}, 1), ("Tanh", {}, 1),
    ("Elu", {}, 1), ("Softplus", {}, 1), ("Abs", {}, 1), ("Neg", {}, 1), ("Erf", {}, 1),
    ("HardSigmoid", {}, 1), ("Softsign", {}, 1), ("Selu", {}, 1), ("Identity", {}, 1),
    ("Dropout", {}, 1), ("Clip", {}, 1), ("ThresholdedRelu", {"alpha": 0.2}, 1),
    ("Celu", {}, 12), ("HardSwish", {}, 14), ("Mish", {}, 18),
]
BINARY = ["Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"]


class _Gen:
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
    def conv(self, x: Live | None = None) -> Live:
        x = x or self.take(4)
        n, c, h, w = x.shape
        divisors = [d for d in range(2, c + 1) if c % d == 0]
        kind = self.pick(["dense", "dense", "dense", "depthwise", "grouped"] if divisors
                         else ["dense"])
        if kind == "dense":
            group, cout = 1, self.int_(1, MAX_C)
        elif kind == "depthwise":
            group, cout = c, c * self.int_(1, max(1, MAX_C // c))
        else:
            group = self.pick(divisors)
            cout = group * self.int_(1, max(1, MAX_C // group))
        k = self.pick([1, 3])
        stride = self.pick([1, 2]) if min(h, w) >= 2 else 1
        dil = 2 if k == 3 and self.int_(0, 5) == 0 else 1
        span = dil * (k - 1) + 1  # the dilated kernel's extent
        pad = span // 2 if k == 1 or min(h, w) < span or self.coin() else 0
        ins = [x.name, self.weight(cout, c // group, k, k)]
        if self.coin():
            ins.append(self.vec(cout, -0.1, 0.1))
        y = self.b.op("Conv", ins, kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4,
                      group=group, dilations=[dil, dil])
        self.use(x)
        self.log.append(f"Conv[{kind} {c}->{cout} g{group} k{k} s{stride} d{dil}]")
        return self.add(y, (n, cout, (h + 2 * pad - span) // stride + 1,
                            (w + 2 * pad - span) // stride + 1))

    def conv_transpose(self, x: Live | None = None) -> Live:
        x = x or self.take(4)
        n, c, h, w = x.shape
        group = self.pick([1] + [d for d in range(2, c + 1) if c % d == 0])
        cout = self.int_(1, MAX_C) if group == 1 else group * self.int_(1, max(1, MAX_C // group))
        modes = ["same"] + (["up_k3", "up_k2"] if max(h, w) * 2 <= MAX_SPATIAL else [])
        mode = self.pick(modes)
        k, s, p, op = {"same": (3, 1, 1, 0), "up_k3": (3, 2, 1, 1), "up_k2": (2, 2, 0, 0)}[mode]
        ins = [x.name, self.weight(c, cout // group, k, k)]
        if self.coin():
            ins.append(self.vec(cout, -0.1, 0.1))
        shape = (n, cout, (h - 1) * s - 2 * p + k + op, (w - 1) * s - 2 * p + k + op)
        if self.int_(0, 3) == 0:  # the spatial output size given instead of pads
            y = self.b.op("ConvTranspose", ins, kernel_shape=[k, k], strides=[s, s],
                          output_shape=list(shape[2:]), group=group)
            mode += " output_shape"
        else:
            y = self.b.op("ConvTranspose", ins, kernel_shape=[k, k], strides=[s, s],
                          pads=[p] * 4, output_padding=[op, op], group=group)
        self.use(x)
        self.log.append(f"ConvTranspose[{c}->{cout} g{group} {mode}]")
        return self.add(y, shape)

    def gemm(self, x: Live | None = None, fout: int | None = None) -> Live:
        x = x or self.take(2)
        n, f = x.shape
        if fout is None:
            same_n = [t.c for t in self.of_rank(2) if t.shape[0] == n]
            fout = self.pick(same_n) if same_n and self.int_(0, 3) == 0 else self.int_(1, MAX_C)
        trans_b = self.coin()
        wt = self.weight(fout, f) if trans_b else self.weight(f, fout)
        trans_a = self.int_(0, 4) == 0  # A given transposed: (F, N)
        a = self.b.op("Transpose", [x.name], perm=[1, 0]) if trans_a else x.name
        ins = [a, wt]
        tensor_bias = [t for t in self.of_rank(2) if t.shape == (n, fout)]
        bias = self.pick(["none", "1d", "2d", "scalar", "one"]
                         + (["full"] if isinstance(n, int) else [])
                         + (["tensor"] if tensor_bias else []))
        if bias == "tensor":  # C is another activation: a residual inside the Gemm
            c_t = self.recent(tensor_bias)
            ins.append(c_t.name)
            self.use(c_t)
        elif bias != "none":
            shape = {"1d": (fout,), "2d": (1, fout), "scalar": (), "one": (1,),
                     "full": (n, fout)}[bias]
            ins.append(self.vec(shape, -0.5, 0.5))
        alpha, beta = self.pick([1.0, 0.5]), self.pick([1.0, 2.0])
        y = self.b.op("Gemm", ins, transA=int(trans_a), transB=int(trans_b), alpha=alpha,
                      beta=beta)
        self.use(x)
        self.log.append(f"Gemm[{f}->{fout} transA={int(trans_a)} transB={int(trans_b)} "
                        f"bias={bias}]")
        return self.add(y, (n, fout))

    def matmul(self, x: Live | None = None) -> Live:
        x = x or self.take(2, 3, 4)  # on NCHW it mixes W and leaves the channels alone
        f, fout = int(x.shape[-1]), self.int_(1, MAX_C)
        y = self.b.op("MatMul", [x.name, self.weight(f, fout)])
        if self.coin():
            y = self.b.op("Add", [y, self.vec(fout, -0.5, 0.5)])
        self.use(x)
        self.log.append(f"MatMul[rank{x.rank} {f}->{fout}]")
        return self.add(y, x.shape[:-1] + (fout,))

    # -- per-channel ops ------------------------------------------------------------------
    def batchnorm(self, x: Live | None = None) -> Live:
        x = x or self.take(2, 4)
        c, r = x.c, self.rng
        reused = ("bn", c) in self.shared and self.int_(0, 3) == 0
        if reused:  # the statistics of an earlier BatchNormalization, shared
            params = self.shared[("bn", c)]
        else:
            params = [self.const(p.astype(np.float32)) for p in (
                r.uniform(0.5, 1.5, c), r.standard_normal(c) * 0.1, r.standard_normal(c) * 0.1,
                r.uniform(0.5, 1.5, c))]
            self.shared[("bn", c)] = params
        y = self.b.op("BatchNormalization", [x.name] + params, epsilon=1e-5)
        self.use(x)
        self.log.append(f"BatchNormalization{'[shared]' if reused else ''}")
        return self.add(y, x.shape)

    def conv_bn(self) -> Live:
        """Conv -> BatchNormalization (foldable) -> maybe an activation."""
        h = self.batchnorm(self.conv())
        return self.unary(h) if self.coin() else h

    def instance_norm(self) -> Live:
        x = self.take(4)
        y = self.b.op("InstanceNormalization",
                      [x.name, self.vec(x.c, 0.5, 1.5), self.vec(x.c, -0.1, 0.1)], epsilon=1e-5)
        self.use(x)
        self.log.append("InstanceNormalization")
        return self.add(y, x.shape)

    def prelu(self) -> Live:
        x = self.take(2, 3, 4)
        c = x.c
        shapes = {4: [(c, 1, 1), (1, c, 1, 1), (1,)], 2: [(c,), (1,)], 3: [(c,), (1,)]}[x.rank]
        shape = self.pick(shapes)
        y = self.b.op("PRelu", [x.name, self.vec(shape, 0.05, 0.3)])
        self.use(x)
        self.log.append(f"PRelu[{shape}]")
        return self.add(y, x.shape)

    def unary(self, x: Live | None = None) -> Live:
        x = x or self.take(2, 3, 4)
        op, attrs, _ = self.pick([u for u in UNARY if u[2] <= self.opset])
        ins = [x.name]
        if op == "Clip":
            ins += [self.const(np.float32(-0.5)), self.const(np.float32(0.75))]
        y = self.b.op(op, ins, **attrs)
        self.use(x)
        self.log.append(op)
        return self.add(y, x.shape)

    def layer_norm(self) -> Live:
        """LayerNormalization (opset 17): statistics over the axes from ``axis`` on."""
        x = self.take(2, 3, 4)
        axis = self.pick([-1, 1] + ([-2] if x.rank > 2 else []))
        shape = x.shape[axis % x.rank:]
        y = self.b.op("LayerNormalization", [x.name, self.vec(shape, 0.5, 1.5),
                                             self.vec(shape, -0.1, 0.1)], axis=axis)
        self.use(x)
        self.log.append(f"LayerNormalization[axis={axis}]")
        return self.add(y, x.shape)

    def arg_reduce(self) -> Live:
        """ArgMax/ArgMin (int64) cast back to float."""
        x = self.take(4)
        axis = self.pick([1, 2, -1])
        keep = self.coin()
        y = self.b.op(self.pick(["ArgMax", "ArgMin"]), [x.name], axis=axis, keepdims=int(keep))
        y = self.b.op("Cast", [y], to=onnx.TensorProto.FLOAT)
        shape = list(x.shape)
        if keep:
            shape[axis % 4] = 1
        else:
            del shape[axis % 4]
        self.use(x)
        self.log.append(f"ArgReduce[axis={axis} keepdims={int(keep)}]")
        return self.add(y, shape)

    def dropout_mask(self) -> Live:
        """Inference Dropout whose mask output is used: x * float(mask) (the mask is all ones)."""
        x = self.take(2, 3, 4)
        ins = [x.name]
        if self.opset >= 12 and self.coin():
            ins += [self.const(np.float32(0.5)), self.const(np.array(False))]
        y, mask = self.b.op("Dropout", ins, n_out=2)
        y = self.b.op("Mul", [y, self.b.op("Cast", [mask], to=onnx.TensorProto.FLOAT)])
        self.use(x)
        self.log.append(f"DropoutMask[{len(ins)} inputs]")
        return self.add(y, x.shape)

    def unsupported(self) -> Live:
        """An op without a channel rule (it mixes channels): everything touching it freezes."""
        x = self.take(4)
        if self.coin():
            y = self.b.op("LRN", [x.name], size=3)
            shape = x.shape
        else:
            y = self.b.op("Tile", [x.name, self.ints([1, 1, 1, 2])])
            shape = x.shape[:3] + (x.shape[3] * 2,)
        self.use(x)
        self.log.append("Unsupported[LRN]" if shape == x.shape else "Unsupported[Tile]")
        return self.add(y, shape)

    def binary_const(self) -> Live:
        x = self.take(2, 3, 4)
        op = self.pick(BINARY)
        if x.rank == 4:
            _, c, h, w = x.shape
            shapes = [(1, c, 1, 1), (c, 1, 1), (), (1,), (1, 1, 1, w), (1, c, h, w)]
        elif x.rank == 3:
            shapes = [(x.c,), (1, 1, x.c), (), (x.shape[1], x.c)]
        else:
            shapes = [(x.c,), (1, x.c), (), (1,)]
        shape = self.pick(shapes)
        if op == "Div":
            values = self.rng.uniform(0.5, 2.0, shape) * self.rng.choice([-1.0, 1.0], shape)
            const = self.const(np.asarray(values, dtype=np.float32))
        elif op == "Pow":  # integer exponents: defined for negative bases
            const = self.const(self.rng.choice([1.0, 2.0, 3.0], shape).astype(np.float32))
        else:
            const = self.vec(shape, -1.0, 1.0)
        key = (shape, op if op in ("Div", "Pow") else "")  # divisors stay away from zero
        reused = key in self.shared and self.coin()
        if reused:  # one constant used by two nodes
            const = self.shared[key]
        self.shared.setdefault(key, const)
        left = op not in ("Div", "Pow") and self.coin()
        y = self.b.op(op, [const, x.name] if left else [x.name, const])
        self.use(x)
        self.log.append(f"{op}[const {shape}{' left' if left else ''}"
                        f"{' reused' if reused else ''}]")
        return self.add(y, x.shape)

    def residual(self) -> Live:
        x = self.take(2, 3, 4)
        same = [t for t in self.pool if t.shape == x.shape]
        # broadcasting, e.g. squeeze-excitation: (N, C, 1, 1) scales (N, C, H, W)
        se = [t for t in self.pool if t.rank == x.rank and t.shape != x.shape
              and t.shape[0] == x.shape[0]
              and all(d == 1 or d == e for d, e in zip(t.shape[1:], x.shape[1:], strict=True))]
        y = self.pick(same + se)
        if y in same and self.coin():
            op = self.pick(["Sum", "Mean"])
            others = [y] + ([self.pick(same)] if self.coin() else [])
            out = self.b.op(op, [x.name] + [t.name for t in others])
            self.use(x, *others)
        else:
            op = self.pick(["Add", "Sub", "Mul", "Max", "Min"])
            pair = [x, y] if self.coin() else [y, x]
            out = self.b.op(op, [t.name for t in pair])
            self.use(x, y)
        self.log.append(f"{op}[residual {'same' if y in same else 'broadcast ' + str(y.shape)}]")
        return self.add(out, x.shape)

    def softmax(self) -> Live:
        x = self.take(2, 3, 4)
        axis = self.pick([a for a in range(-x.rank, x.rank) if a % x.rank != 0])
        op = self.pick(["Softmax", "Softmax", "LogSoftmax"])
        y = self.b.op(op, [x.name], axis=axis)
        self.use(x)
        self.log.append(f"{op}[axis={axis}]")
        return self.add(y, x.shape)

    # -- channel assembly ------------------------------------------------------------------
    def concat(self) -> Live:
        x = self.take(2, 3, 4)
        ax = x.feat_axis
        if x.rank == 4 and self.int_(0, 3) == 0:
            ax = self.pick([2, 3])  # along a spatial axis: the channels of all parts join
        fits = [t for t in self.pool if t.rank == x.rank
                and t.shape[:ax] + t.shape[ax + 1:] == x.shape[:ax] + x.shape[ax + 1:]]
        parts = [x] + [self.pick(fits) for _ in range(self.int_(1, 2))]
        names = [t.name for t in parts]
        sizes = [int(t.shape[ax]) for t in parts]
        if isinstance(self.n, int) and self.int_(0, 4) == 0:  # a constant part
            shape = list(x.shape)
            shape[ax] = self.int_(1, 3)
            names.append(self.vec(shape))
            sizes.append(shape[ax])
        order = self.draw(st.permutations(range(len(names))))
        names, sizes = [names[i] for i in order], [sizes[i] for i in order]
        axis = self.pick([ax, ax - x.rank])
        y = self.b.op("Concat", names, axis=axis)
        self.use(*parts)
        self.log.append(f"Concat[axis={axis} {'+'.join(str(s) for s in sizes)}"
                        f"{' with input' if any(t.graph_input for t in parts) else ''}]")
        shape = list(x.shape)
        shape[ax] = sum(sizes)
        return self.add(y, shape)

    def split(self) -> list[Live]:
        x = self.recent([t for t in self.of_rank(2, 3, 4) if t.c >= 2])
        ax = x.feat_axis
        if x.rank == 4 and x.shape[2] >= 2 and self.int_(0, 3) == 0:
            ax = 2  # a spatial split now and then
        c = int(x.shape[ax])
        k = self.int_(2, min(3, c))
        forms = ["sizes"]
        if self.opset < 18 and c % k == 0:
            forms.append("equal")
        if self.opset >= 18 and c - (-(-c // k)) * (k - 1) > 0:
            forms.append("num_outputs")
        form = self.pick(forms)
        axis = ax - x.rank if self.int_(0, 3) == 0 else ax  # now and then a negative axis
        if form == "sizes":
            sizes, left = [], c
            for i in range(k - 1):
                s = self.int_(1, left - (k - 1 - i))
                sizes.append(s)
                left -= s
            sizes.append(left)
            if self.opset < 13:
                outs = self.b.op("Split", [x.name], n_out=k, axis=axis, split=sizes)
            else:
                outs = self.b.op("Split", [x.name, self.ints(sizes)], n_out=k, axis=axis)
        elif form == "equal":
            sizes = [c // k] * k
            outs = self.b.op("Split", [x.name], n_out=k, axis=axis)
        else:
            chunk = -(-c // k)
            sizes = [chunk] * (k - 1) + [c - chunk * (k - 1)]
            outs = self.b.op("Split", [x.name], n_out=k, axis=axis, num_outputs=k)
        self.use(x)
        self.log.append(f"Split[axis={axis} {form} {sizes}]")
        result = []
        for name, s in zip(outs, sizes, strict=True):
            shape = list(x.shape)
            shape[ax] = s
            result.append(self.add(name, shape))
        return result

    def slice(self) -> Live:
        x = self.take(4)
        shape = list(x.shape)
        axes = self.pick([[1], [1], [2], [3], [1, 3], [2, 3]])
        starts, ends, steps, desc = [], [], [], []
        for a in axes:
            n = int(shape[a])
            kind = self.pick(["contiguous", "contiguous", "strided", "reversed"])
            if kind == "reversed":
                start, end, step = n - 1, -INT64_MAX, -1
                count = n
            else:
                step = 1 if kind == "contiguous" else self.int_(2, 3)
                lo = self.int_(0, n - 1)
                hi = self.int_(lo + 1, n)
                count = len(range(lo, hi, step))
                start = lo - n if self.coin() else lo
                end = INT64_MAX if hi == n and self.coin() else (hi - n if hi < n and self.coin()
                                                                 else hi)
            starts.append(start)
            ends.append(end)
            steps.append(step)
            shape[a] = count
            desc.append(f"{a}:{start}:{end}:{step}")
        ins = [x.name, self.ints(starts), self.ints(ends)]
        neg_axes = self.coin()
        ins.append(self.ints([a - 4 if neg_axes else a for a in axes]))
        if any(s != 1 for s in steps) or self.coin():
            ins.append(self.ints(steps))
        y = self.b.op("Slice", ins)
        self.use(x)
        self.log.append(f"Slice[{' '.join(desc)}]")
        return self.add(y, shape)

    def pad(self) -> Live:
        x = self.take(4)
        n, c, h, w = x.shape
        where = self.pick(["spatial", "spatial", "channel"])
        if where == "spatial":
            mode = self.pick(["constant", "reflect", "edge"] if min(h, w) >= 3 else
                             ["constant", "edge"])
            low = -1 if mode == "constant" and min(h, w) >= 3 else 0  # negative: a crop
            p = [self.int_(low, 2) for _ in range(4)]  # top, left, bottom, right
            pads = [0, 0, p[0], p[1], 0, 0, p[2], p[3]]
            shape = (n, c, h + p[0] + p[2], w + p[1] + p[3])
        else:
            mode = "constant"
            before, after = self.int_(0, 2), self.int_(0, 2)
            pads = [0, before, 0, 0, 0, after, 0, 0]
            shape = (n, c + before + after, h, w)
        ins = [x.name]
        if self.opset >= 18 and where == "spatial" and self.coin():
            ins += [self.ints([pads[2], pads[3], pads[6], pads[7]]), "",
                    self.ints(self.pick([[2, 3], [-2, -1]]))]
        else:
            ins.append(self.ints(pads))
            if mode == "constant" and self.coin():
                ins.append(self.const(np.float32(0.25)))
        y = self.b.op("Pad", ins, mode=mode)
        self.use(x)
        self.log.append(f"Pad[{where} {mode} {pads}]")
        return self.add(y, shape)

    def resize(self) -> Live:
        x = self.take(4)
        n, c, h, w = x.shape
        forms = ["scales"]
        if isinstance(n, int) or self.opset >= 18:
            forms.append("sizes")
        form = self.pick(forms)
        mode = self.pick(["nearest", "linear"])
        roi = self.empty_f() if self.opset < 13 else ""
        attrs = {"mode": mode}
        if form == "scales":
            ups = max(h, w) * 2 <= MAX_SPATIAL
            downs = h % 2 == 0 and w % 2 == 0
            s = self.pick(([2.0] if ups else []) + ([0.5] if downs else []) + [1.0])
            cs = 2.0 if mode == "nearest" and self.int_(0, 5) == 0 else 1.0  # channels too
            ins = [x.name, roi, self.const(np.array([1, cs, s, s], np.float32))]
            shape = (n, int(c * cs), int(h * s), int(w * s))
        else:
            h2, w2 = self.int_(1, min(2 * h, MAX_SPATIAL)), self.int_(1, min(2 * w, MAX_SPATIAL))
            scales = self.empty_f() if self.opset < 13 else ""
            if self.opset >= 18 and (not isinstance(n, int) or self.coin()):
                axes = self.pick([[2, 3], [1, 2, 3], [-2, -1], [-3, -2, -1]])
                sizes = [h2, w2] if len(axes) == 2 else [c, h2, w2]
                attrs["axes"] = axes
            else:
                sizes = [n, c, h2, w2]
            ins = [x.name, roi, scales, self.ints(sizes)]
            shape = (n, c, h2, w2)
        y = self.b.op("Resize", ins, **attrs)
        self.use(x)
        self.log.append(f"Resize[{form} {mode} -> {shape[2:]}]")
        return self.add(y, shape)

    def pool_(self) -> Live:
        x = self.take(4)
        n, c, h, w = x.shape
        kinds = ["avg3", "global_avg", "global_max"] + (["max2"] if min(h, w) >= 2 else [])
        kind = self.pick(kinds)
        if kind == "max2":
            y, shape = self.b.op("MaxPool", [x.name], kernel_shape=[2, 2], strides=[2, 2]), (
                n, c, h // 2, w // 2)
        elif kind == "avg3":
            y = self.b.op("AveragePool", [x.name], kernel_shape=[3, 3], strides=[1, 1],
                          pads=[1, 1, 1, 1])
            shape = x.shape
        else:
            op = "GlobalAveragePool" if kind == "global_avg" else "GlobalMaxPool"
            y, shape = self.b.op(op, [x.name]), (n, c, 1, 1)
        self.use(x)
        self.log.append(f"Pool[{kind}]")
        return self.add(y, shape)

    # -- moving channels between axes ----------------------------------------------------
    def flatten(self) -> Live:
        x = self.recent([t for t in self.of_rank(4)
                         if int(np.prod(t.shape[1:])) <= MAX_FEATURES])
        n, c, h, w = x.shape
        f = c * h * w
        how = self.pick(["Flatten", "reshape0", "reshape-1", "computed"]
                        + (["static"] if isinstance(n, int) else []))
        if how == "Flatten":
            y = self.b.op("Flatten", [x.name], axis=1)
        elif how == "computed":
            y = self.computed_reshape(x.name, [-1])
        else:
            target = {"reshape0": [0, -1], "reshape-1": [-1, f], "static": [n, f]}[how]
            y = self.reshape(x.name, target)
        self.use(x)
        self.log.append(f"Flatten[{how} {f}]")
        out = self.add(y, (n, f))
        return self.gemm(out) if self.coin() else out

    def unflatten(self) -> Live:
        """Gemm -> Reshape [-1, C, H, W] -> Conv/ConvTranspose."""
        x = self.take(2)
        c, h, w = self.int_(1, 8), self.int_(1, 4), self.int_(1, 4)
        g = self.gemm(x, fout=c * h * w)
        n = g.shape[0]
        how = self.pick(["-1", "0", "computed"] + (["static"] if isinstance(n, int) else []))
        if how == "computed":  # the batch read from the first graph input, as torch does
            y = self.computed_reshape(g.name, [c, h, w], self.pool[0].name if self.coin()
                                      else g.name)
        else:
            first = {"-1": -1, "0": 0, "static": n}[how]
            y = self.reshape(g.name, [first, c, h, w])
        self.use(g)
        self.log.append(f"Unflatten[{how} {c}x{h}x{w}]")
        out = self.add(y, (n, c, h, w))
        return self.conv_transpose(out) if self.coin() else self.conv(out)

    def channels_last_matmul(self) -> Live:
        x = self.take(4)
        n, c, h, w = x.shape
        t = self.b.op("Transpose", [x.name], perm=[0, 2, 3, 1])
        cout = self.int_(1, MAX_C)
        y = self.b.op("MatMul", [t, self.weight(c, cout)])
        if self.coin():
            y = self.b.op("Add", [y, self.vec(cout, -0.5, 0.5)])
        if self.coin():
            y = self.b.relu(y)
        y = self.b.op("Transpose", [y], perm=[0, 3, 1, 2])
        self.use(x)
        self.log.append(f"ChannelsLastMatMul[{c}->{cout}]")
        return self.add(y, (n, cout, h, w))

    def to_sequence(self) -> Live:
        x = self.take(4)
        n, c, h, w = x.shape
        target = [0, c, -1] if self.coin() or not isinstance(n, int) else [n, c, h * w]
        y = self.b.op("Transpose", [self.reshape(x.name, target)], perm=[0, 2, 1])
        self.use(x)
        self.log.append(f"ToSequence[{target}]")
        return self.add(y, (n, h * w, c))

    def from_sequence(self) -> Live:
        x = self.take(3)
        n, t, f = x.shape
        if t * f <= MAX_FEATURES and self.coin():
            y, shape = self.b.op("Flatten", [x.name], axis=1), (n, t * f)
        else:
            y = self.axes_attr_or_input("ReduceMean", [x.name], [1], 18, keepdims=0)
            shape = (n, f)
        self.use(x)
        self.log.append(f"FromSequence[{shape}]")
        return self.add(y, shape)

    def squeeze(self) -> Live:
        x = self.recent([t for t in self.of_rank(4) if t.shape[2:] == (1, 1)])
        n, c = x.shape[:2]
        if isinstance(n, int) and c > 1 and self.coin():
            # no axes: every axis of size 1 goes (the batch too when it is 1)
            y = self.b.op("Squeeze", [x.name])
            if n == 1:
                y = self.axes_attr_or_input("Unsqueeze", [y], [0], 13)
            self.log.append("Squeeze[all ones]")
        else:
            axes = self.pick([[2, 3], [-1, -2]])
            y = self.axes_attr_or_input("Squeeze", [x.name], axes, 13)
            self.log.append(f"Squeeze[{axes}]")
        self.use(x)
        return self.add(y, (n, c))

    def unsqueeze(self) -> Live:
        x = self.take(2)
        axes = self.pick([[2, 3], [-1, -2]])
        y = self.axes_attr_or_input("Unsqueeze", [x.name], axes, 13)
        self.use(x)
        self.log.append(f"Unsqueeze[{axes}]")
        return self.add(y, x.shape + (1, 1))

    def reduce_mean(self) -> Live:
        x = self.take(4)
        n, c, h, w = x.shape
        axes = self.pick([[2, 3], [-2, -1], [2], [1], [1, 2]]
                         + ([[]] if self.opset >= 18 else []))
        keep = self.coin()
        op = self.pick(["ReduceMean", "ReduceMean", "ReduceSum", "ReduceL2", "ReduceMax"])
        if axes and op != "ReduceMean":  # over channels: gated sums, frozen max
            y = self.axes_attr_or_input(op, [x.name], axes, 13 if op == "ReduceSum" else 18,
                                        keepdims=int(keep))
            gone = {a % 4 for a in axes}
            shape = tuple(1 if i in gone else d for i, d in enumerate(x.shape)) if keep else \
                tuple(d for i, d in enumerate(x.shape) if i not in gone)
            self.use(x)
            self.log.append(f"{op}[{axes} keepdims={int(keep)}]")
            return self.add(y, shape)
        if not axes:  # opset 18: no axes and noop_with_empty_axes is the identity
            y = self.b.op("ReduceMean", [x.name], keepdims=int(keep), noop_with_empty_axes=1)
            self.use(x)
            self.log.append("ReduceMean[noop]")
            return self.add(y, x.shape)
        y = self.axes_attr_or_input("ReduceMean", [x.name], axes, 18, keepdims=int(keep))
        gone = {a % 4 for a in axes}
        shape = tuple(1 if i in gone else d for i, d in enumerate(x.shape)) if keep else tuple(
            d for i, d in enumerate(x.shape) if i not in gone)
        self.use(x)
        self.log.append(f"ReduceMean[{axes} keepdims={int(keep)}]")
        return self.add(y, shape)

    def transpose_roundtrip(self) -> Live:
        """Transpose NCHW by a random permutation, an op on the permuted tensor, transpose back."""
        x = self.take(4)
        perm = list(self.draw(st.permutations(range(4))))
        inverse = [perm.index(i) for i in range(4)]
        shape = [x.shape[p] for p in perm]
        t = self.b.op("Transpose", [x.name], perm=perm)
        what = self.pick(["unary", "softmax", "const"])
        if what == "unary":
            t = self.b.op(self.pick(["Relu", "Tanh", "Sigmoid"]), [t])
        elif what == "softmax":
            axis = self.pick([a for a in range(1, 4)])
            t = self.b.op("Softmax", [t], axis=axis)
            what += f" axis={axis}"
        else:  # a constant along the permuted channel axis
            cshape = [1] * 4
            cshape[inverse[1]] = x.c
            t = self.b.op("Mul", [t, self.vec(cshape, 0.5, 1.5)])
        y = self.b.op("Transpose", [t], perm=inverse)
        self.use(x)
        self.log.append(f"TransposeRoundtrip[{perm} {what} {shape}]")
        return self.add(y, x.shape)

    def merge_channels(self) -> Live:
        """Reshape (N, C, H, W) -> (N, C*H, W) (channels spread over rows), MatMul over W,
        reshape back to (N, C, H, W')."""
        x = self.take(4)
        n, c, h, w = x.shape
        first = self.pick([0, -1] + ([n] if isinstance(n, int) else []))
        t = self.reshape(x.name, [first, c * h, w])
        w2 = self.int_(1, MAX_HW)
        t = self.b.op("MatMul", [t, self.weight(w, w2)])
        if self.coin():
            t = self.b.op("Add", [t, self.vec((c * h, 1), -0.5, 0.5)])
        y = self.reshape(t, [first, c, h, w2])
        self.use(x)
        self.log.append(f"MergeChannels[{c}x{h} first={first} {w}->{w2}]")
        return self.add(y, (n, c, h, w2))

    def gather(self) -> Live:
        x = self.take(4)
        axis = self.pick([1, 1, 2, -1])
        ax = axis % 4
        size = int(x.shape[ax])
        shape = list(x.shape)
        scalar = self.coin()
        if scalar:  # a scalar index: the axis disappears
            idx = np.array(self.int_(-size, size - 1))
            del shape[ax]
        else:
            idx = np.array([self.int_(-size, size - 1) for _ in range(self.int_(1, size + 1))])
            shape[ax] = idx.size
        y = self.b.op("Gather", [x.name, self.ints(idx)], axis=axis)
        if scalar and self.coin():  # and back to 4-D
            y = self.axes_attr_or_input("Unsqueeze", [y], [ax], 13)
            shape.insert(ax, 1)
        self.use(x)
        self.log.append(f"Gather[axis={axis} {idx.tolist()}]")
        return self.add(y, shape)

    def shared_conv(self) -> list[Live]:
        x = self.recent([t for t in self.of_rank(4) if t.c <= MAX_C])
        n, c, h, w = x.shape
        k = self.pick([1, 3])
        wt = self.weight(c, c, k, k)
        a = self.b.op("Conv", [x.name, wt], kernel_shape=[k, k], pads=[k // 2] * 4)
        others = [t for t in self.of_rank(4) if t.c == c and t is not x]
        if self.int_(0, 3) == 0:  # the same weight in a ConvTranspose: [Cin, Cout] there
            z = self.pick(others or [x])
            b2 = self.b.op("ConvTranspose", [z.name, wt], kernel_shape=[k, k],
                           pads=[k // 2] * 4)
            self.use(x, z)
            self.log.append(f"SharedConv[transposed {c}]")
            return [self.add(a, x.shape), self.add(b2, z.shape)]
        if others and self.coin():
            z = self.pick(others)
            b2 = self.b.op("Conv", [z.name, wt], kernel_shape=[k, k], pads=[k // 2] * 4)
            self.use(x, z)
            self.log.append(f"SharedConv[parallel {c}]")
            return [self.add(a, x.shape), self.add(b2, z.shape)]
        b2 = self.b.op("Conv", [self.b.relu(a), wt], kernel_shape=[k, k], pads=[k // 2] * 4)
        self.use(x)
        self.log.append(f"SharedConv[chain {c}]")
        return [self.add(b2, x.shape)]

    # -- the driver ----------------------------------------------------------------------
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
           opsets: tuple[int, ...] = tuple(range(11, 19))) -> onnx.ModelProto:
    """A random valid ONNX model over onnxprune's supported ops (see the module docstring)."""
    opset = draw(st.sampled_from(opsets))
    batch: Dim = draw(st.sampled_from(["batch", 1, 2]))
    seed = draw(st.integers(0, 2**16))
    g = _Gen(draw, opset, batch, seed)
    g.const_nodes = draw(st.integers(0, 7)) == 0
    g.graph_inputs()
    for _ in range(draw(st.integers(min_steps, max_steps))):
        name, _, action = g.pick([s for s in g.steps() if s[1]])
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
