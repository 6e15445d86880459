"""What a unit mask leaves: parameters and MACs after removal, computed exactly and fast.

A weight's kept elements are the product of the kept counts on its claimed axes times its
other dims; a Conv/Gemm/MatMul's MACs scale with the kept fraction of each claimed axis of
its weight (output and input channels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis.blocks import Block
from ..analysis.model import ChannelAnalysis
from ..analysis.size import is_param, node_macs

WHOLE = -1  # an "axis" claim: the whole weight goes with one unit (a residual block)


@dataclass
class _Param:
    size: int
    shape: tuple[int, ...]
    axes: list[tuple[int, np.ndarray]]  # (axis, unit per index; -1 not owned)


class CostModel:
    """``params(removed)`` and ``macs(removed)`` for any bool mask over units."""

    def __init__(self, graph: gs.Graph, analysis: ChannelAnalysis,
                 blocks: Sequence[tuple[int, Block]] = ()):
        """``blocks``: (unit, block) of residual blocks the mask may remove whole: the weights
        only a block's branch reads go with its unit."""
        self.analysis = analysis
        self._params: dict[str, _Param] = {}
        for node in graph.nodes:
            for t in node.inputs:
                if is_param(t) and t.name not in self._params:
                    shape = tuple(int(d) for d in t.values.shape)
                    self._params[t.name] = _Param(int(np.prod(shape)), shape, [])
        for (name, axis), units in analysis.params.items():
            if name in self._params:
                self._params[name].axes.append((axis, units))
        for unit, block in blocks:
            inside = set(block.nodes)
            for node in graph.nodes:
                for t in node.inputs if node.name in inside else ():
                    if t.name in self._params and all(c.name in inside for c in t.outputs):
                        self._params[t.name].axes.append((WHOLE, np.array([unit])))
        self._macs: list[tuple[int, _Param]] = []
        for node in graph.nodes:
            m = node_macs(node)
            w = node.inputs[1] if len(node.inputs) > 1 else None
            if m and w is not None and w.name in self._params:
                self._macs.append((m, self._params[w.name]))
        self.latency = None  # a latency.model.LatencyModel, for latency targets
        self.params_total = self.params(np.zeros(analysis.num_units, dtype=bool))
        self.macs_total = self.macs(np.zeros(analysis.num_units, dtype=bool))

    @staticmethod
    def _kept_fraction(p: _Param, removed: np.ndarray) -> float:
        frac = 1.0
        for axis, units in p.axes:
            if axis == WHOLE:  # the weight of a block: all of it, or nothing
                frac *= 0.0 if removed[units[0]] else 1.0
                continue
            owned = units >= 0
            gone = int(removed[units[owned]].sum())
            frac *= (p.shape[axis] - gone) / p.shape[axis]
        return frac

    def params(self, removed: np.ndarray) -> int:
        total = 0.0
        for p in self._params.values():
            total += p.size * self._kept_fraction(p, removed) if p.axes else p.size
        return int(round(total))

    def macs(self, removed: np.ndarray) -> int:
        return int(round(sum(m * self._kept_fraction(p, removed) for m, p in self._macs)))

    def reduction(self, removed: np.ndarray, target: str = "params") -> float:
        """Fraction of parameters (or MACs, or predicted latency) removed by ``removed``."""
        if target == "latency":
            return self.latency.reduction(removed)
        if target == "macs":
            return 1.0 - self.macs(removed) / max(self.macs_total, 1)
        return 1.0 - self.params(removed) / max(self.params_total, 1)

    def unit_weights(self, target: str = "params") -> np.ndarray:
        """First-order cost of each unit: what removing it alone saves (for allocation)."""
        if target == "latency":
            return self.latency.unit_weights()
        w = np.zeros(self.analysis.num_units)
        pairs = [(p.size, p) for p in self._params.values()] if target == "params" else self._macs
        for amount, p in pairs:
            for axis, units in p.axes:
                if axis == WHOLE:
                    w[units[0]] += amount
                    continue
                owned = units >= 0
                np.add.at(w, units[owned], amount / p.shape[axis])
        return w
