"""The latency of any unit mask, predicted from a latency table: every weighted layer's
measured time at its kept input and output widths (interpolated between the widths measured:
a third, two thirds and all of each claimed axis), scaled and offset to the whole model's
measured time: at first the rest of the model (what the whole model's time leaves beyond the
layers) is constant; every cut measured end to end refits the two (``fit``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis.blocks import Block
from ..analysis.model import ChannelAnalysis
from ..rules import layer_of
from .blocks import own_times
from .table import CONV_ATTRS, LatencyTable, Probe

GRID = (1 / 3, 2 / 3, 1.0)
FLOOR = 0.02  # no cut is predicted faster than this share of the original


@dataclass
class _Layer:
    name: str
    units: tuple[np.ndarray | None, np.ndarray | None]  # (input, output) axis units, -1: not owned
    sizes: tuple[int, int]
    grid: tuple[list[int], list[int]]  # kept counts measured on each axis
    ms: np.ndarray  # [len(grid in), len(grid out)]
    block: int | None = None  # the unit of the residual block it is in (removed: no time)

    def kept(self, removed: np.ndarray) -> tuple[int, int]:
        out = []
        for units, size in zip(self.units, self.sizes, strict=True):
            gone = 0 if units is None else int(removed[units[units >= 0]].sum())
            out.append(size - gone)
        return out[0], out[1]

    def time(self, removed: np.ndarray) -> float:
        if self.block is not None and removed[self.block]:
            return 0.0
        kin, kout = self.kept(removed)
        rows = [np.interp(kout, self.grid[1], row) for row in self.ms]
        return float(np.interp(kin, self.grid[0], rows))


def envelope(ms: np.ndarray) -> np.ndarray:
    """A layer's times at kept (input, output) widths, each no slower than any wider one's:
    a narrower layer could run as the wider one padded, so a time measured above a wider
    width's is noise (small layers time within a few microseconds of each other)."""
    out = np.minimum.accumulate(ms[::-1], axis=0)[::-1]
    return np.minimum.accumulate(out[:, ::-1], axis=1)[:, ::-1]


class LatencyModel:
    """``ms(removed)``: the predicted latency (ms) of the model with those units removed, at
    the batch and shapes of ``graph`` (a copy shaped for them); ``whole_ms``: the model's
    measured time, whose share beyond the weighted layers stays constant."""

    def __init__(self, graph: gs.Graph, analysis: ChannelAnalysis, table: LatencyTable,
                 whole_ms: float, blocks: Sequence[tuple[int, Block]] = (),
                 feeds: dict | None = None):
        """``blocks``: (unit, block) of residual blocks a mask may remove whole: the layers
        inside one take no time once it is gone, nor, with ``feeds`` (the model's inputs
        at the batch and shapes measured), the block's own work beyond them."""
        self.analysis = analysis
        block_of = {n: unit for unit, b in blocks for n in b.nodes}
        # a leading size shape inference lost (an embedding's Gather) is the batch
        batch = next((t.shape[0] for t in graph.inputs if t.shape and isinstance(
            t.shape[0], int)), None)
        self.layers: list[_Layer] = []
        pending = []
        for node in graph.nodes:
            spec = _spec(node, analysis, batch)
            if spec is None:
                continue
            units, sizes, make = spec
            if all(u is None for u in units) and node.name not in block_of:
                continue  # a layer no cut narrows or removes: part of the rest
            grid = tuple(sorted({max(1, round(f * n)) for f in GRID}) if u is not None else [n]
                         for u, n in zip(units, sizes, strict=True))
            probes = [make(a, b) for a in grid[0] for b in grid[1]]
            pending.append((node.name, units, sizes, grid, probes))
        times = table.ms([p for *_, probes in pending for p in probes])
        at = 0
        for name, units, sizes, grid, probes in pending:
            ms = envelope(np.array(times[at:at + len(probes)]).reshape(len(grid[0]),
                                                                     len(grid[1])))
            at += len(probes)
            self.layers.append(_Layer(name, units, sizes, (list(grid[0]), list(grid[1])), ms,
                                      block_of.get(name)))
        none = np.zeros(analysis.num_units, bool)
        # a block's own time beyond its weighted layers (attention products, softmax, norms)
        self.extras: dict[int, float] = {}
        if blocks and feeds is not None:
            inside: dict[int, float] = {}
            for layer in self.layers:
                if layer.block is not None:
                    inside[layer.block] = inside.get(layer.block, 0.0) + layer.time(none)
            self.extras = own_times(graph, blocks, feeds, table.timer, inside, table.seconds)
        self.layers_ms = self.layer_ms(none)
        # ms = offset + scale x the layers' table time: at first the rest is constant; each
        # end-to-end measurement of a cut refits both (``fit``)
        # (a layer timed alone pays a run's overhead the whole model pays once: when the
        # layers add up to more than the model, they are scaled down to it)
        self.offset = max(whole_ms - self.layers_ms, 0.0)
        self.scale = min(1.0, whole_ms / max(self.layers_ms, 1e-12))
        self.points = [(self.layers_ms, whole_ms)]
        self.whole_ms = self.ms(none)

    def layer_ms(self, removed: np.ndarray) -> float:
        """The table's time of the kept layers, and of the kept blocks' own work."""
        return (sum(layer.time(removed) for layer in self.layers)
                + sum(ms for unit, ms in self.extras.items() if not removed[unit]))

    def ms(self, removed: np.ndarray) -> float:
        return max(self.offset + self.scale * self.layer_ms(removed), FLOOR * self.points[0][1])

    def fit(self, removed: np.ndarray, measured_ms: float) -> None:
        """Calibrate on a cut measured end to end: offset and scale by least squares over every
        measurement (the original's first). The offset may come out negative: a layer timed
        alone also pays for its run and the copy of its output, which the whole model does
        not, and that share grows as layers narrow."""
        self.points.append((self.layer_ms(removed), measured_ms))
        x, y = np.array(self.points).T
        if np.ptp(x) <= 1e-12:
            return
        scale, offset = np.polyfit(x, y, 1)
        if scale > 0:
            self.offset, self.scale = float(offset), float(scale)
            self.whole_ms = self.ms(np.zeros(self.analysis.num_units, bool))

    def reduction(self, removed: np.ndarray) -> float:
        return 1.0 - self.ms(removed) / max(self.whole_ms, 1e-12)

    def unit_weights(self) -> np.ndarray:
        """First-order: a layer's time spread over the channels of each axis it loses."""
        w = np.zeros(self.analysis.num_units)
        none = np.zeros(self.analysis.num_units, bool)
        for layer in self.layers:
            full = layer.time(none)
            if layer.block is not None:
                w[layer.block] += full
            for units, size in zip(layer.units, layer.sizes, strict=True):
                if units is not None:
                    np.add.at(w, units[units >= 0], full / size)
        for unit, ms in self.extras.items():  # a block's own work goes with it
            w[unit] += ms
        return w


def _spec(node: gs.Node, analysis: ChannelAnalysis, batch: int | None = None):
    """(input and output axis units, sizes, probe maker) of a weighted layer a cut can narrow,
    or None (timed as part of the rest)."""
    if node.op not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(node.inputs) < 2:
        return None
    x, w = node.inputs[0], node.inputs[1]
    if not isinstance(w, gs.Constant) or x.shape is None:
        return None
    dims = [batch if i == 0 and not isinstance(d, int) else d for i, d in enumerate(x.shape)]
    if any(not isinstance(d, int) or d <= 0 for d in dims):
        return None
    shape = tuple(int(d) for d in w.values.shape)
    xs = tuple(int(d) for d in dims)
    units = analysis.params.get
    view = layer_of(node)
    attrs = tuple((k, tuple(v) if isinstance(v, list) else v)
                  for k, v in sorted(node.attrs.items()) if k in CONV_ATTRS)
    if view is None:  # depthwise: one axis, its group count the width
        group = int(node.attrs.get("group", 1))
        if node.op == "Conv" and group == xs[1] == shape[0] and shape[1] == 1:
            return ((None, units((w.name, 0))), (1, shape[0]),
                    lambda i, o: Probe("Conv", (xs[0], o, *xs[2:]), (o, 1, *shape[2:]),
                                       (*attrs, ("group", o))))
        return None
    out_axis = view.weight_out_axis()
    in_axis = 1 - out_axis  # the weight's input-channel axis (a conv's second, a matrix's other)
    axes = (units((w.name, in_axis)), units((w.name, out_axis)))
    sizes = (shape[in_axis], shape[out_axis])
    if view.spatial and node.op == "ConvTranspose":  # weight [in, out, k...]
        return axes, sizes, lambda i, o: Probe("ConvTranspose", (xs[0], i, *xs[2:]),
                                               (i, o, *shape[2:]), attrs)
    if view.spatial:
        return axes, sizes, lambda i, o: Probe("Conv", (xs[0], i, *xs[2:]), (o, i, *shape[2:]),
                                               attrs)
    return axes, sizes, lambda i, o: Probe("MatMul", (*xs[:-1], i), (i, o))
