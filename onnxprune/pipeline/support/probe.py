"""A shifted held-out set for models that read token ids: the calibration samples with their
content tokens replaced by random vocabulary ids.

Calibration text is often written in one style (templated sentences, one domain); a refit on it
can learn that style and break every other text while the held-out share, drawn from the same
style, reads better. Random tokens of the vocabulary the data already uses keep the
structure (lengths, padding, the markers every sample starts and ends with) and drop the
style: how far the pruned model's outputs stray from the original's on them tracks text written
unlike the calibration data (MiniLM: cosine 0.10 / 0.49 on this probe against 0.05 / 0.47 on
sentences of other domains, for a refit pruned model and a plain one). The stages measure it
beside the held-out share when the metric compares outputs with the original's; a recovery
stage that makes it worse is undone.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ...calib.text import is_mask
from ...ir.arrays import Calibration

MIN_ROWS = 64  # rows of an embedding table (smaller tables: segment or type ids)
MIN_DISTINCT = 16  # distinct content ids the data must use to say what the vocabulary is


def token_inputs(graph: gs.Graph) -> dict[str, int]:
    """Integer graph inputs that index an embedding table (a ``Gather`` on a constant 2-D
    table of at least ``MIN_ROWS`` rows, directly or through a ``Cast``): name -> rows."""
    ints = {t.name for t in graph.inputs if _integer(t.dtype)}
    casts = {n.outputs[0].name: n.inputs[0].name for n in graph.nodes
             if n.op == "Cast" and n.inputs and n.inputs[0].name in ints}
    out: dict[str, int] = {}
    for node in graph.nodes:
        if node.op != "Gather" or len(node.inputs) < 2 or int(node.attrs.get("axis", 0)) != 0:
            continue
        table, index = node.inputs[0], node.inputs[1].name
        name = index if index in ints else casts.get(index)
        if name and isinstance(table, gs.Constant) and len(table.shape) == 2 \
                and table.shape[0] >= MIN_ROWS:
            out[name] = max(out.get(name, 0), int(table.shape[0]))
    return out


def _integer(dtype) -> bool:
    try:
        return dtype is not None and np.issubdtype(np.dtype(dtype), np.integer)
    except TypeError:  # an ONNX type numpy does not have (bfloat16, float8)
        return False


def _mask(data: Calibration, ids: np.ndarray) -> np.ndarray:
    for name in data:
        if is_mask(name) and np.shape(data[name]) == ids.shape:
            return np.asarray(data[name]) > 0
    return np.ones(ids.shape, bool)


def _markers(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Positions holding the same id in every sample at its first or last unmasked token
    (``[CLS]``/``[SEP]``, ``<s>``/``</s>``): kept as they are."""
    keep = ~mask
    rows = np.arange(len(ids))
    has = mask.any(axis=1)
    if not has.all():
        return keep
    first, last = mask.argmax(axis=1), mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
    for pos in (first, last):
        if len(np.unique(ids[rows, pos])) == 1:
            keep[rows, pos] = True
    return keep


def token_probe(graph: gs.Graph, data: Calibration, seed: int = 0) -> Calibration | None:
    """``data`` with the content tokens of every token-id input replaced by ids drawn
    uniformly from the range the data's content tokens span; None when the model reads no
    token ids (or the data uses too few distinct ones to tell the vocabulary)."""
    names = [n for n in token_inputs(graph) if n in data and np.ndim(data[n]) == 2
             and data.axes.get(n, 0) == 0]
    if not names:
        return None
    rng = np.random.default_rng(seed)
    out = dict(data)
    for name in names:
        ids = np.asarray(data[name])
        fixed = _markers(ids, _mask(data, ids))
        content = ids[~fixed]
        if len(np.unique(content)) < MIN_DISTINCT:
            return None
        new = ids.copy()
        new[~fixed] = rng.integers(int(content.min()), int(content.max()) + 1,
                                   int((~fixed).sum())).astype(ids.dtype)
        out[name] = new
    return Calibration(out, dict(data.axes))
