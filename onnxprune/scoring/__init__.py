"""Importance criteria: one score per removable unit (higher = more important)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..analysis.model import ChannelAnalysis
from ..errors import UsageError, warn
from .data_driven import activation_scores, metric_scores, taylor_scores
from .magnitude import magnitude_scores, member_values, reduce_members
from .reconstruction import reconstruction_scores

CRITERIA = ("l1", "l2", "bn", "lamp", "fpgm", "activation", "apoz", "reconstruction", "taylor",
            "metric")
NEEDS_DATA = ("activation", "apoz", "reconstruction", "taylor", "metric")
REDUCTIONS = ("mean", "sum", "max")
NORMALIZATIONS = ("mean", "max", "sum", "none")

__all__ = ["CRITERIA", "NEEDS_DATA", "normalize", "score_units", "share_linked"]


def score_units(criterion: str, graph: gs.Graph, analysis: ChannelAnalysis, *,
                reduce: str = "mean", evaluator=None, reference: onnx.ModelProto | None = None,
                calib: Mapping[str, np.ndarray] | None = None,
                bn_scales: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    if criterion not in CRITERIA:
        raise UsageError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if reduce not in REDUCTIONS:
        raise UsageError(f"unknown group reduction {reduce!r}; choose one of {', '.join(REDUCTIONS)}")
    if criterion in ("l1", "l2", "lamp", "fpgm"):
        scores = reduce_members(analysis, member_values(graph, analysis, criterion), reduce)
    elif criterion == "bn":
        scores = _bn_with_fallback(graph, analysis, reduce, bn_scales)
    elif criterion in ("activation", "apoz"):
        if calib is None or reference is None:
            raise UsageError(f"--criterion {criterion} needs calibration data (--calib)")
        scores = activation_scores(reference, analysis, dict(calib),
                                   "mean" if criterion == "activation" else "apoz")
    elif criterion == "reconstruction":
        if calib is None or reference is None:
            raise UsageError("--criterion reconstruction needs calibration data (--calib)")
        scores = _reconstruction(graph, reference, analysis, calib)
    else:
        if evaluator is None:
            raise UsageError(f"--criterion {criterion} needs calibration data and a --metric")
        scores = metric_scores(evaluator) if criterion == "metric" else taylor_scores(evaluator)
    return share_linked(analysis, scores)


def _reconstruction(graph, reference, analysis, calib) -> np.ndarray:
    """Reconstruction loss where a group feeds layers that can be rebuilt; elsewhere the
    mean activation, scaled to sit below the group's covered scores (never preferred)."""
    scores, covered = reconstruction_scores(graph, reference, analysis, calib)
    missing = [g for g in analysis.groups if not g.frozen and not covered[g.units].all()]
    if not missing:
        return scores
    act = activation_scores(reference, analysis, dict(calib), "mean")
    for g in missing:
        have = covered[g.units]
        if have.any():  # a few channels feed nothing rebuildable: keep them
            scores[g.units[~have]] = scores[g.units[have]].max() + act[g.units[~have]]
        else:
            scores[g.units] = act[g.units]
    return scores


def _bn_with_fallback(graph, analysis, reduce, bn_scales) -> np.ndarray:
    """BN scale where a group has BatchNorms; L2 magnitude (rescaled) for groups without."""
    bn = reduce_members(analysis, member_values(graph, analysis, "bn", bn_scales), reduce)
    l2 = magnitude_scores(graph, analysis, "l2", reduce)
    out = bn.copy()
    fallback = [g for g in analysis.groups if not g.frozen and not np.any(bn[g.units] > 0)]
    for g in fallback:
        out[g.units] = l2[g.units]
    if fallback:
        warn(f"criterion bn: {len(fallback)} prunable group(s) have no BatchNorm scale "
             f"(e.g. group {fallback[0].id}: {', '.join(fallback[0].layers[:2]) or '-'}); "
             "they are ranked by L2 magnitude instead")
    return out


def share_linked(analysis: ChannelAnalysis, scores: np.ndarray) -> np.ndarray:
    """Units joined by links (a gathered copy and its source, e.g. both sides of a flow
    adapter) all get the sum of their scores, so every side ranks the same channels alike and
    cuts the same ones."""
    if not analysis.links.size:
        return scores
    n = scores.size
    rows, cols = analysis.links[:, 0], analysis.links[:, 1]
    adj = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n))
    _, label = connected_components(adj, directed=False)
    return np.bincount(label, weights=scores)[label]


def normalize(analysis: ChannelAnalysis, scores: np.ndarray, how: str = "mean") -> np.ndarray:
    """Make scores comparable across groups (for global ranking): divide each group's scores
    by their mean, max or sum; 'none' leaves them."""
    if how not in NORMALIZATIONS:
        raise UsageError(f"unknown normalization {how!r}; choose one of {', '.join(NORMALIZATIONS)}")
    out = scores.astype(np.float64).copy()
    if how == "none":
        return out
    for g in analysis.groups:
        s = out[g.units]
        ref = {"mean": np.mean, "max": np.max, "sum": np.sum}[how](np.abs(s)) if s.size else 0
        if ref > 0:
            out[g.units] = s / ref
    return out
