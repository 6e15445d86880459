"""Layer steps of the random graph generator: convolutions, dense layers, norms,
activations, elementwise ops with constants, residuals, softmax. Mixed into ``graphgen._Gen``,
whose helpers (``take``, ``add``, ``use``, ``pick``, ``weight``, ...) they use."""

from __future__ import annotations

import numpy as np
import onnx
from graphgen_base import BINARY, MAX_C, MAX_SPATIAL, UNARY, Live


class LayerSteps:
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

    def block(self) -> Live:
        """A residual block ``y = x + f(x)``: a private branch of two channel-preserving layers
        (nothing else reads it, so the analysis finds a removable block), optionally scaled
        per channel (layer scale), joined back onto the stream it read."""
        x = self.take(2, 3, 4)
        c, hidden = int(x.shape[1] if x.rank == 4 else x.shape[-1]), self.int_(1, MAX_C)
        if x.rank == 4:
            k = self.pick([1, 3])
            h = self.b.op("Relu", [self.b.op("Conv", [x.name, self.weight(hidden, c, 1, 1)],
                                             kernel_shape=[1, 1])])
            f = self.b.op("Conv", [h, self.weight(c, hidden, k, k), self.vec(c, -0.1, 0.1)],
                          kernel_shape=[k, k], pads=[k // 2] * 4)
        else:
            h = self.b.op("Relu", [self.b.op("MatMul", [x.name, self.weight(c, hidden)])])
            f = self.b.op("MatMul", [h, self.weight(hidden, c)])
        scaled = self.coin()
        if scaled:
            f = self.b.op("Mul", [f, self.vec((c, 1, 1) if x.rank == 4 else (c,), 0.1, 1.0)])
        out = self.b.op("Add", [x.name, f] if self.coin() else [f, x.name])
        self.use(x)
        self.log.append(f"block[{c}->{hidden}->{c}{' scaled' if scaled else ''}]")
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
