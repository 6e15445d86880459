"""Weight-magnitude importance: L1 or L2 norm of every parameter slice a unit owns."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
import onnx_graphsurgeon as gs

from ..analysis.model import ChannelAnalysis

CRITERIA = ("l1", "l2")


def magnitude_scores(graph: gs.Graph, analysis: ChannelAnalysis, criterion: str = "l2") -> np.ndarray:
    """One score per unit, reduced over the whole group (every member's slices)."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    tensors = graph.tensors()
    scores = np.zeros(analysis.num_units, dtype=np.float64)
    for (pname, axis), units in analysis.params.items():
        values = np.asarray(tensors[pname].values, dtype=np.float32)
        other = tuple(i for i in range(values.ndim) if i != axis)
        mag = np.abs(values) if criterion == "l1" else np.square(values)
        per_slice = mag.sum(axis=other, dtype=np.float64)
        owned = units >= 0
        np.add.at(scores, units[owned], per_slice[owned])
    scores = np.sqrt(scores) if criterion == "l2" else scores
    return share_linked(analysis, scores)


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
