"""Candidate cuts measured as compensation will leave them (sensitivity after compensation).

Compensation refits every layer that lost input channels by least squares on the
calibration data. A search that scores candidates on the gated reference alone judges a cut
by what it does *before* that refit: it avoids cuts the refit would repair and takes cuts it
cannot. Here every candidate is scored after the refit. For each layer a cut can reach, one
Gram matrix of its original input rows is computed once (``G = A'A``, ``A = [patches 1]``,
the rows compensation samples). The layer's output on those rows is ``A theta0``, so its
refit on the kept columns ``k`` solves ``(G_kk + ridge) theta = G_k: theta0``: no output
data, a small solve per layer per candidate. The refit weights are fed to one session of the
gated reference in which these layers read their weight and bias as inputs; one run per
candidate (their weights differ, so candidates are not batched).

For a group cut alone (the sensitivity curves) this is the refit compensation makes: the
layers read the cut tensor's other channels from an unchanged upstream. For combined cuts
the Grams of the original inputs stand in for the pruned graph's.
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import scipy.linalg
from onnx import helper

from ..analysis.model import ChannelAnalysis
from ..analysis.size import node_costs
from ..ir.runtime import session
from ..ir.weights import Skeleton, proto
from ..progress import task
from ..rules.layers import Layer
from ..search.activations import layer_gates, layer_inputs
from ..search.evaluate import Evaluator
from ..search.memory import default_budget
from ..search.prefix import Prefixes
from ..verify.oracle import GATES
from .compensate import (
    RIDGE,
    design_rows,
    refittable,
    solver_matrix,
)

# refit solutions kept, in bytes (the measured path asks for the same layer cuts again: a few
# per layer suffice; MiniLM's 512 solutions of 2.4 MB each doubled the search's memory)
CACHE_BYTES = 192 << 20


@dataclass
class _Layer:
    view: Layer  # the layer (rules/layers.py)
    weight: str  # the input its weight is fed through
    bias: str | None  # ... and its bias (None: a MatMul, whose bias is another node)
    col_units: np.ndarray  # the unit of each solver column (the intercept not included)
    theta0: np.ndarray  # [columns (+1), outputs]: the layer as the solver sees it
    gram: np.ndarray  # A'A of its sampled input rows (float64)
    originals: tuple[np.ndarray, np.ndarray | None]  # weight and bias as fed uncut


def refit(gram: np.ndarray, theta0: np.ndarray, keep: np.ndarray, ridge: float = RIDGE,
          intercept: bool = True) -> np.ndarray:
    """The least-squares refit of a layer on its kept solver rows ``keep`` (the intercept row
    always kept), regularised as compensation does; removed rows are zero. The plain cut
    when the refit reproduces the layer's outputs no better (as compensation keeps it)."""
    keep = np.asarray(keep, bool)
    if intercept:
        keep = np.append(keep, True)
    k = np.flatnonzero(keep)
    g = gram[np.ix_(k, k)]
    data = k < len(gram) - (1 if intercept else 0)  # not the intercept
    diag = np.flatnonzero(data)
    g[diag, diag] += ridge * np.trace(g[np.ix_(diag, diag)]) / max(len(diag), 1)
    rhs = gram[k] @ theta0
    try:  # symmetric positive definite with the ridge: Cholesky
        with warnings.catch_warnings():  # ill-conditioned without a ridge: solved all the same
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            sol = scipy.linalg.solve(g, rhs, assume_a="pos", check_finite=False)
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(g, rhs, rcond=None)[0]
    theta = np.zeros_like(theta0)
    theta[k] = sol
    # output error on the Gram's rows, ||A (t - theta0)||^2 = sum(d * G d): the refit against
    # the plain cut, whose difference is only the removed rows
    d = theta - theta0
    gone = np.flatnonzero(~keep)
    g_gone = gram[np.ix_(gone, gone)]
    plain_error = float(np.sum(theta0[gone] * (g_gone @ theta0[gone])))
    if float(np.sum(d * (gram @ d))) < plain_error:
        return theta
    return theta0 * keep[:, None]


class RefitEvaluator:
    """``Evaluator``'s interface (``metric``, ``base``, ``evaluate``, ``evaluate_many``) with
    every candidate measured after the refit of the layers it cuts."""

    def __init__(self, ev: Evaluator, graph: gs.Graph, reference: onnx.ModelProto | Skeleton | None,
                 analysis: ChannelAnalysis, calib, ridge: float = RIDGE, seed: int = 0,
                 memory: int | None = None, grams_of: RefitEvaluator | None = None,
                 skip: frozenset[str] = frozenset()):
        """``reference`` (the graph as a model) is run on ``calib`` for the Grams, unless
        ``grams_of`` (an evaluator of the same graph and data) has them. ``skip``: layers (by
        node name) never refit (the second factor of a factorized matrix: its truncation is
        already the best fit over every row, not the calibration data's)."""
        self.skip = skip
        start = time.perf_counter()
        self.ev, self.metric, self.base, self.analysis = ev, ev.metric, ev.base, analysis
        self.n, self.ridge, self.evals = ev.n, ridge, 0
        if grams_of is not None:
            self.layers, self.skipped = grams_of.layers, grams_of.skipped
        else:
            self.layers, self.skipped = self._grams(graph, reference, analysis, calib, seed,
                                                    memory or default_budget())
        fed = self._fed_model()
        self.names = [o.name for o in proto(fed).graph.output]
        # candidates that begin late in the graph run from its kept prefix
        self.prefixes = Prefixes(fed, analysis, self.names, self._feeds, ev.inputs, ev.axes,
                                 ev.static_batch, None if ev.static_batch else ev.max_rows,
                                 node_costs(graph))
        self.session = session(self.prefixes.model, arena="shared")
        if self.prefixes.settle(self.session, analysis.num_units, lambda: (  # their tensors
                not ev.per_sample or self.prefixes.bound_rows(  # count in a call's memory
                    self.session, ev.per_sample, ev.n, ev.budget) is not None)):
            self.session = session(self.prefixes.model, arena="shared")
        self._cache: OrderedDict = OrderedDict()
        self._cached = 0  # bytes in the cache
        self.seconds = time.perf_counter() - start

    def summary(self) -> dict:
        stats = self.prefixes.stats
        return {"layers": len(self.layers), "skipped": self.skipped, "ridge": self.ridge,
                "seconds": round(self.seconds, 2),
                "prefix": {**stats, "session_seconds": round(stats["session_seconds"], 2)}}

    # -- set-up ---------------------------------------------------------------------------

    def _grams(self, graph, reference, analysis, calib, seed, budget) -> tuple[list, int]:
        rng = np.random.default_rng(seed)
        pairs, seen = [], set()
        for gate, node in layer_gates(graph, analysis):
            if node.name in seen or node.name in self.skip or refittable(node) is None or \
                    analysis.unit_frozen[
                    gate.units].all():
                continue
            seen.add(node.name)
            pairs.append((gate, node))
        layers, skipped, room = [], 0, budget // 2  # the Grams' share of the budget
        with task("refit grams", len(pairs)) as advance:
            for gate, node, x in layer_inputs(reference, pairs, calib):
                layer = self._layer(gate, node, x, rng, room)
                if layer is None:
                    skipped += 1
                else:
                    layers.append(layer)
                    room -= layer.gram.nbytes
                advance()
        return layers, skipped

    @staticmethod
    def _layer(gate, node: gs.Node, x: np.ndarray, rng, room: int) -> _Layer | None:
        view = refittable(node)
        if view.data_axis(x.ndim) != gate.axis % x.ndim:
            return None
        w0, _ = view.matrix()
        k, intercept = view.kernel, view.intercept
        cols = w0.shape[0] + (1 if intercept else 0)
        if w0.shape[0] != gate.units.size * k or cols * cols * 8 > room:
            return None
        p, _ = design_rows(view, x, [], rng)
        a = p.astype(np.float64)
        if intercept:
            a = np.concatenate([a, np.ones((len(a), 1))], axis=1)
        theta0 = solver_matrix(view)
        bias = f"{node.name}/onnxprune_refit_bias" if intercept else None
        w_native = np.asarray(node.inputs[1].values)
        b_native = None if not intercept else theta0[-1].astype(w_native.dtype)
        return _Layer(view, node.inputs[1].name, bias, np.repeat(gate.units, k), theta0,
                      a.T @ a, (w_native, b_native))

    def _fed_model(self) -> onnx.ModelProto | Skeleton:
        """The gated reference whose refit layers read their weight and bias as inputs."""
        gated = self.ev.oracle.model
        model = onnx.ModelProto()
        model.CopyFrom(proto(gated))
        arrays = dict(gated.arrays) if isinstance(gated, Skeleton) else None
        fed = {layer.weight for layer in self.layers}
        kept = [t for t in model.graph.initializer if t.name not in fed]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
        nodes = {n.name: n for n in model.graph.node}
        for layer in self.layers:
            w = layer.originals[0]
            model.graph.input.append(helper.make_tensor_value_info(
                layer.weight, helper.np_dtype_to_tensor_dtype(w.dtype), list(w.shape)))
            if arrays is not None:
                arrays.pop(layer.weight, None)
            if layer.bias is None:
                continue
            n = nodes[layer.view.node.name]
            model.graph.input.append(helper.make_tensor_value_info(
                layer.bias, helper.np_dtype_to_tensor_dtype(w.dtype), [int(layer.theta0.shape[1])]))
            while len(n.input) < 2:
                n.input.append("")
            if len(n.input) > 2:
                n.input[2] = layer.bias
            else:
                n.input.append(layer.bias)
            if n.op_type == "Gemm":  # the fed bias already carries beta
                for a in list(n.attribute):
                    if a.name == "beta":
                        n.attribute.remove(a)
                n.attribute.append(helper.make_attribute("beta", 1.0))
        return Skeleton(model, arrays) if arrays is not None else model

    # -- candidates ---------------------------------------------------------------------------

    def _feeds(self, keep: np.ndarray) -> dict[str, np.ndarray]:
        """The gates and the weights (refit where a layer lost inputs) of a candidate."""
        return {GATES: keep.reshape(1, -1), **self._weights(keep < 0.5)}

    def _weights(self, removed: np.ndarray) -> dict[str, np.ndarray]:
        feeds: dict[str, np.ndarray] = {}
        for i, layer in enumerate(self.layers):
            gone = removed[layer.col_units]
            w, b = layer.originals
            if gone.any():
                key = (i, np.packbits(gone).tobytes())
                got = self._cache.get(key)
                if got is None:
                    theta = refit(layer.gram, layer.theta0, ~gone, self.ridge,
                                  layer.bias is not None)
                    mat = theta[:-1] if layer.bias is not None else theta
                    got = (layer.view.weight(mat),
                           None if layer.bias is None else theta[-1].astype(w.dtype))
                    self._cache[key] = got
                    self._cached += _nbytes(got)
                    while self._cached > CACHE_BYTES and len(self._cache) > 1:
                        self._cached -= _nbytes(self._cache.popitem(last=False)[1])
                else:
                    self._cache.move_to_end(key)
                w, b = got
            feeds[layer.weight] = w
            if layer.bias is not None:
                feeds[layer.bias] = b
        return feeds

    def outputs(self, keep: np.ndarray) -> list[np.ndarray]:
        """The model's outputs on the calibration data with ``keep``'s cut, refit."""
        return self.prefixes.run(self.session, np.asarray(keep, np.float32).ravel())

    def evaluate(self, keep: np.ndarray) -> float:
        return float(self.evaluate_many(np.asarray(keep)[None])[0])

    def evaluate_many(self, masks: np.ndarray) -> np.ndarray:
        masks = np.asarray(masks, dtype=np.float32).reshape(-1, self.analysis.num_units)
        self.evals += len(masks)
        return np.array([self.ev.score(self.outputs(keep)) for keep in masks])

    def close(self) -> None:
        self._cache.clear()
        self._cached = 0
        self.prefixes.close()


def _nbytes(weights: tuple[np.ndarray, np.ndarray | None]) -> int:
    return sum(a.nbytes for a in weights if a is not None)


def can_refit(ev: Evaluator) -> str | None:
    """Why candidates cannot be measured after a refit (None: they can)."""
    if ev.metric.on_model:
        return f"metric {ev.metric.name} runs the model itself"
    if not ev.n:
        return "no calibration samples"
    return None

