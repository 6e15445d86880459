"""Weight-based importance: L1/L2 magnitude, BN scale, LAMP and FPGM, per member of a group
(every parameter axis a unit owns slices of), reduced over the members."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis.model import ChannelAnalysis
from ..ir.quant import param_values

FPGM_MAX = 4096  # larger layers skip FPGM's pairwise distances (memory)


def _members(graph: gs.Graph, analysis: ChannelAnalysis) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(param name, per-slice matrix [slices, rest], owning unit per slice) for each weight
    member; vectors (biases, per-channel scales) are left to the 'bn' criterion."""
    tensors = graph.tensors()
    for (pname, axis), units in analysis.params.items():
        values = param_values(tensors[pname])  # quantized weights: de-quantized
        if values.ndim < 2:
            continue
        flat = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
        yield pname, flat, units


def member_values(graph: gs.Graph, analysis: ChannelAnalysis, criterion: str,
                  bn_scales: Mapping[str, np.ndarray] | None = None
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(owning unit per slice, importance per slice) for every member the criterion scores."""
    if criterion == "bn":
        yield from _bn_members(graph, analysis, bn_scales or {})
        return
    for _, flat, units in _members(graph, analysis):
        if criterion in ("l1", "l2"):
            v = np.abs(flat).sum(1) if criterion == "l1" else np.square(flat).sum(1)
        elif criterion == "lamp":
            v = _lamp(np.square(flat).sum(1))
        elif criterion == "fpgm":
            if len(flat) > FPGM_MAX or len(flat) < 2:
                continue
            v = _fpgm(flat)
        else:
            raise ValueError(f"not a weight criterion: {criterion}")
        yield units, v.astype(np.float64)


def _lamp(v: np.ndarray) -> np.ndarray:
    """LAMP: each slice's squared norm over the sum of the norms not smaller than it."""
    order = np.argsort(v, kind="stable")
    tail = np.cumsum(v[order][::-1])[::-1]
    out = np.empty_like(v, dtype=np.float64)
    out[order] = v[order] / np.maximum(tail, 1e-30)
    return out


def _fpgm(flat: np.ndarray) -> np.ndarray:
    """FPGM: summed distance of each filter to the others (small = near the geometric median)."""
    x = flat.astype(np.float64)
    sq = (x**2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    return np.sqrt(d2).sum(1)


def _bn_members(graph, analysis, bn_scales):
    """|gamma| of BatchNorms: folded ones (recorded by normalization, keyed by tensor) and
    BatchNormalization nodes still in the graph."""
    for (tensor, axis), units in analysis.slots.items():
        if tensor in bn_scales and axis == 1 and len(bn_scales[tensor]) == len(units):
            yield units, np.abs(bn_scales[tensor]).astype(np.float64)
    tensors = graph.tensors()
    for node in graph.nodes:
        if node.op == "BatchNormalization" and (node.inputs[1].name, 0) in analysis.params:
            units = analysis.params[(node.inputs[1].name, 0)]
            yield units, np.abs(np.asarray(tensors[node.inputs[1].name].values, np.float64))


def reduce_members(analysis: ChannelAnalysis, members, how: str = "mean") -> np.ndarray:
    """Reduce per-member values into one score per unit: mean, sum or max over members."""
    n = analysis.num_units
    total, count, peak = np.zeros(n), np.zeros(n), np.full(n, -np.inf)
    for units, values in members:
        owned = units >= 0
        u, v = units[owned], values[owned]
        # a unit may own several slices of one member (blocks): they add up within it
        per = np.zeros(n)
        np.add.at(per, u, v)
        hit = np.unique(u)
        total[hit] += per[hit]
        count[hit] += 1
        peak[hit] = np.maximum(peak[hit], per[hit])
    if how == "sum":
        return total
    if how == "max":
        return np.where(count > 0, peak, 0.0)
    if how == "mean":
        return np.where(count > 0, total / np.maximum(count, 1), 0.0)
    raise ValueError(f"unknown group reduction {how!r}")


def magnitude_scores(graph: gs.Graph, analysis: ChannelAnalysis, criterion: str = "l2",
                     reduce: str = "mean") -> np.ndarray:
    """One L1/L2 score per unit (TP-style: sum of |w|^p per slice, mean over members)."""
    return reduce_members(analysis, member_values(graph, analysis, criterion), reduce)
