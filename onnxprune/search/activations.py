"""Activations of a model's tensors on calibration data, fetched as memory allows: a few
tensors per run of only the nodes that compute them (``fetched``), on as many samples as a
memory cap leaves room for (``within_cap``); and the layers whose inputs refits and
reconstruction scores read (``layer_gates``: where a gate feeds a layer its rule views as a
matrix product, ``rules/layers.py``; ``layer_inputs``: their data inputs)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..analysis.model import ChannelAnalysis, Gate
from ..ir.arrays import Calibration, axes_of
from ..ir.runtime import computing, run_batched, session
from ..ir.weights import Skeleton, proto
from ..rules import layer_of
from .memory import cap, room, rows_for, search_budget

FETCH_BYTES = 512 * 2**20  # activations fetched per run of a model (bounds memory)


def activations(model: onnx.ModelProto | Skeleton, names: list[str], feeds: dict
                ) -> dict[str, np.ndarray]:
    """The tensors ``names`` of ``model`` on ``feeds`` (only the nodes that compute them, run
    in memory-sized chunks)."""
    names = list(dict.fromkeys(names))
    run = computing(model, names)
    m = proto(run)
    inputs = {i.name for i in m.graph.input}
    axes = axes_of(feeds)
    feeds = {k: v for k, v in feeds.items() if k in inputs}
    axes = {k: a for k, a in axes.items() if k in inputs}
    outs = run_batched(session(run, arena=False), feeds, names, axes=axes,
                       max_rows=rows_for(m, feeds, axes, search_budget(0.25)))
    return dict(zip(names, outs, strict=True))


def fetched(model: onnx.ModelProto | Skeleton, names: list[str], feeds: dict
            ) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, tensor)`` for each of ``names`` in order, fetched a few per run of ``model``:
    as many as ``FETCH_BYTES`` holds (sized on the run before), so that only those are held
    at once (every refit layer's output at once took gigabytes on large activations)."""
    lo, per_run = 0, 8 if cap() is None else 1
    while lo < len(names):
        part = names[lo:lo + per_run]
        lo += len(part)
        acts = activations(model, part, feeds)
        size = sum(a.nbytes for a in acts.values()) / max(len(acts), 1)
        per_run = max(1, int(room(FETCH_BYTES, 0.25) // max(size, 1)))
        yield from ((n, acts[n]) for n in part)
        del acts


def fitting_samples(model: onnx.ModelProto | Skeleton, names: list[str], feeds: dict,
                    share: float = 0.1) -> int | None:
    """Under a memory cap (``--memory``), how many samples of ``feeds`` keep the largest of
    ``names`` within ``share`` of the room left (sized on one sample); None without a cap or
    when all fit."""
    axes = axes_of(feeds)
    sizes = {np.shape(v)[a] for k, v in feeds.items() if (a := axes.get(k)) is not None}
    known = {o for node in proto(model).graph.node for o in node.output}
    names = list(dict.fromkeys(n for n in names if n in known))
    if cap() is None or not names or len(sizes) != 1 or sizes == {0}:
        return None
    n = sizes.pop()
    one = activations(model, names, as_calibration(feeds).take(np.arange(1)))
    per_sample = max(max((a.nbytes for a in one.values()), default=0), 1)
    fit = max(1, int(room(per_sample * n, share) // per_sample))
    return None if fit >= n else fit


def as_calibration(feeds: dict) -> Calibration:
    return feeds if isinstance(feeds, Calibration) else Calibration(dict(feeds), axes_of(feeds))


def within_cap(model: onnx.ModelProto | Skeleton, names: list[str], feeds: dict,
               share: float = 0.1, seed: int = 0) -> dict:
    """``feeds``, or under a memory cap (``--memory``) as many of its samples (chosen at
    random, in order) as ``fitting_samples`` allows."""
    fit = fitting_samples(model, names, feeds, share)
    if fit is None:
        return feeds
    data = as_calibration(feeds)
    pick = np.sort(np.random.default_rng(seed).choice(data.samples, size=fit, replace=False))
    return data.take(pick)


def layer_gates(graph: gs.Graph, analysis: ChannelAnalysis) -> list[tuple[Gate, gs.Node]]:
    """Gates at the data input of a layer whose weight is a constant we can read."""
    nodes = {n.name: n for n in graph.nodes}
    out = []
    for gate in analysis.gates:
        node = nodes.get(gate.node)
        if node is None or not gate.batched or gate.input_index != 0:
            continue
        view = layer_of(node)
        # channels first: the gate must be on axis 1; channels last: the readers check it
        if view is None or (not view.channels_last and gate.axis != 1):
            continue
        out.append((gate, node))
    return out


def layer_inputs(reference: onnx.ModelProto, pairs: list[tuple[Gate, gs.Node]], calib):
    """(gate, node, the node's data input on ``calib``) for each pair, fetched for a few
    layers per run of ``reference`` (``fetched``); under a memory cap, on as many samples of
    ``calib`` as fit (``within_cap``)."""
    names = [node.inputs[0].name for _, node in pairs]
    inputs = fetched(reference, names, within_cap(reference, names, calib))
    for (gate, node), (_, x) in zip(pairs, inputs, strict=True):
        yield gate, node, x
