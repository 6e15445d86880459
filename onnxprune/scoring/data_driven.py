"""Data-driven importance from calibration runs: activation statistics, first-order Taylor
(finite differences over the gates), and the application metric's drop per closed channel."""

from __future__ import annotations

import numpy as np
import onnx

from ..analysis.model import ChannelAnalysis
from ..ir.arrays import axes_of
from ..ir.runtime import computing, run_batched, session
from ..ir.weights import Skeleton, proto
from ..progress import task
from ..search.evaluate import Evaluator
from ..search.memory import rows_for

CHUNK = 64  # candidate masks per evaluation batch


def activation_scores(reference: onnx.ModelProto | Skeleton, analysis: ChannelAnalysis,
                      calib: dict[str, np.ndarray], stat: str = "mean") -> np.ndarray:
    """Mean |a| (``stat='mean'``) or 1 - APoZ (``'apoz'``: share of non-zero activations) of
    every channel where it enters a channel-mixing layer, summed over those places."""
    nodes = {n.name: n for n in proto(reference).graph.node}
    names = list(dict.fromkeys(nodes[g.node].input[g.input_index]
                               for g in analysis.gates if g.batched))
    model = computing(reference, names)  # only what computes them (weights not copied)
    inputs = {i.name for i in proto(model).graph.input}
    feeds = {k: v for k, v in calib.items() if k in inputs}
    axes = axes_of(calib)
    outs = dict(zip(names, run_batched(session(model), feeds, names, axes=axes,
                                       max_rows=rows_for(model, feeds, axes)), strict=True))
    scores = np.zeros(analysis.num_units)
    for gate in [g for g in analysis.gates if g.batched]:
        x = np.moveaxis(outs[nodes[gate.node].input[gate.input_index]], gate.axis, 0)
        x = x.reshape(x.shape[0], -1).astype(np.float64)
        per = np.abs(x).mean(1) if stat == "mean" else (x != 0).mean(1)
        np.add.at(scores, gate.units, per)
    return scores


def _closing(ev: Evaluator, units: np.ndarray, level: float, what: str) -> np.ndarray:
    """The metric's utility with each unit in ``units`` gated to ``level`` in turn."""
    out = np.empty(len(units))
    with task(what, len(units)) as advance:
        for lo in range(0, len(units), CHUNK):
            batch = units[lo:lo + CHUNK]
            masks = np.ones((len(batch), ev.analysis.num_units), np.float32)
            masks[np.arange(len(batch)), batch] = level
            out[lo:lo + len(batch)] = [ev.metric.utility(v) for v in ev.evaluate_many(masks)]
            advance(len(batch))
    return out


def _prunable_units(analysis: ChannelAnalysis) -> np.ndarray:
    units = [g.units for g in analysis.groups if not g.frozen]
    units = np.concatenate(units) if units else np.zeros(0, np.int64)
    return units[~analysis.unit_frozen[units]]


def metric_scores(ev: Evaluator) -> np.ndarray:
    """Loss in the application metric when a channel alone is closed (may be negative)."""
    units = _prunable_units(ev.analysis)
    scores = np.zeros(ev.analysis.num_units)
    scores[units] = ev.metric.utility(ev.base) - _closing(ev, units, 0.0, "metric importance")
    return scores


def taylor_scores(ev: Evaluator, eps: float = 0.05) -> np.ndarray:
    """|d metric / d gate| at the open model, by a forward difference of size ``eps``."""
    units = _prunable_units(ev.analysis)
    scores = np.zeros(ev.analysis.num_units)
    scores[units] = np.abs(ev.metric.utility(ev.base) - _closing(ev, units, 1.0 - eps, "taylor")) / eps
    return scores
