"""Structure steps of the random graph generator: concat, split, slice, pad, resize, pools,
flatten/unflatten, sequences, squeeze/unsqueeze, reductions, transposes, gathers, shared
weights. Mixed into ``graphgen._Gen``."""

from __future__ import annotations

import numpy as np
from graphgen_base import INT64_MAX, MAX_C, MAX_FEATURES, MAX_HW, MAX_SPATIAL, Live
from hypothesis import strategies as st


class ShapeSteps:
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
