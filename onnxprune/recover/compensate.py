"""Compensation: refit every layer that lost input channels so that, on calibration data, it
reproduces what the original layer produced (ridge least squares on its remaining inputs,
with the bias absorbing the removed channels' mean contribution). Layers are refit in graph
order, each one seeing the outputs of the layers already refit, so errors do not pile up.

Layers are read through their rules' layer view (``rules/layers.py``): the weight as a
matrix and back, and the rows the input gives (convolutions: the patch matrix, "im2col",
taken from onnxruntime itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..analysis.model import ChannelAnalysis
from ..ir.graph import export_skeleton, input_or_none
from ..progress import task
from ..rules import layer_of
from ..rules.layers import Layer
from ..search.activations import activations, as_calibration, fetched, fitting_samples
from ..search.memory import cap, cells
from ..verify.checks import cut_arrays
from .normal_equations import NormalEquations
from .sweep import planned

RIDGE = 1e-3  # of the mean input energy (the diagonal of the normal equations)
MAX_ROWS = 40_000  # rows of the least-squares problem per layer (sampled)


@dataclass(frozen=True)
class LayerFit:
    node: str
    rows: int
    error_before: float  # relative error of the pruned layer on calibration data
    error_after: float  # ... after the refit


def solver_matrix(layer: Layer) -> np.ndarray:
    """The layer's weight matrix with its bias as a last row (zeros without one) where the
    solver fits an intercept: the layer as the least-squares problem sees it."""
    w0, b0 = layer.matrix()
    if not layer.intercept:
        return w0
    return np.concatenate([w0, (b0 if b0 is not None else np.zeros(w0.shape[1]))[None]])


def _kept(layer: Layer, y: np.ndarray, analysis: ChannelAnalysis, removed: np.ndarray
          ) -> np.ndarray:
    """The original output ``y`` of a layer at the channels its pruned version still makes."""
    axis = layer.data_axis(y.ndim)
    keep = analysis.keep_mask((layer.node.outputs[0].name, axis), removed)
    return y if keep is None else np.compress(keep, y, axis=axis)


def _store(layer: Layer, sol: np.ndarray) -> None:
    node, intercept = layer.node, layer.intercept
    dtype = node.inputs[1].values.dtype
    mat = sol[:-1] if intercept else sol
    bias = sol[-1] if intercept else None
    new = layer.weight(mat)
    node.inputs[1] = gs.Constant(node.inputs[1].name, new)
    if bias is None:
        return
    if node.op == "Gemm":
        beta = float(node.attrs.get("beta", 1.0))
        c = input_or_none(node, 2)
        if c is None or beta == 0.0:
            node.attrs["beta"] = beta = 1.0
        shape = (-1,) if c is None else np.asarray(c.values).shape
        values = (bias / beta).reshape(shape if np.prod(shape) == bias.size else (-1,))
    else:
        values = bias
    name = node.inputs[2].name if input_or_none(node, 2) is not None else f"{node.name}_bias"
    const = gs.Constant(name, np.ascontiguousarray(values.astype(dtype)))
    if len(node.inputs) > 2 and input_or_none(node, 2) is not None:
        node.inputs[2] = const
    else:
        while len(node.inputs) < 2:
            node.inputs.append(gs.Variable.empty())
        node.inputs.append(const)


def refittable(node: gs.Node) -> Layer | None:
    """The layer view of a node compensation can refit on its own (``rules.layer_of``: a
    Conv/ConvTranspose of one group, Gemm or MatMul with a constant 2-D or conv weight) whose
    weight and bias no other node reads; else None."""
    layer = layer_of(node)
    return layer if layer is not None and layer.own_weights() else None


def _targets(graph: gs.Graph, analysis: ChannelAnalysis, removed: np.ndarray,
             also: Sequence[str] = (), skip: Sequence[str] = ()) -> list[Layer]:
    """Layers that lost input channels, or read a stream a removed block changed (``also``),
    and can be refit on their own (weights not shared), but those in ``skip``."""
    lost = ({g.node for g in analysis.gates if removed[g.units].any()} | set(also)) - set(skip)
    return [v for n in graph.nodes if n.name in lost and (v := refittable(n)) is not None]


def design_rows(layer: Layer, x: np.ndarray, ys: list[np.ndarray], rng: np.random.Generator,
                max_rows: int = MAX_ROWS) -> tuple[np.ndarray, list[np.ndarray]]:
    """The least-squares rows of a layer on input ``x`` (``Layer.rows``: a convolution's patch
    matrix on as many samples as ``cells`` allows), at most ``MAX_ROWS`` of them (sampled),
    with the same rows of each output ``ys``."""
    if layer.spatial:
        per_sample = max((int(np.prod(y.shape[2:])) for y in ys), default=int(np.prod(
            x.shape[2:])))
        cols = x.shape[1] * layer.kernel
        n = max(1, min(len(x), cells() // max(cols * per_sample, 1)))
        pick = rng.choice(len(x), size=n, replace=False) if n < len(x) else slice(None)
        x, ys = x[pick], [y[pick] for y in ys]
    p, ys = layer.rows(x), [layer.out_rows(y) for y in ys]
    limit = max_rows if cap() is None else max(1, min(max_rows, cells() // max(p.shape[1], 1)))
    if len(p) > limit:
        rows = rng.choice(len(p), size=limit, replace=False)
        p, ys = p[rows], [y[rows] for y in ys]
    return p, ys


def compensate(graph: gs.Graph, reference: onnx.ModelProto, analysis: ChannelAnalysis,
               removed: np.ndarray, calib: dict[str, np.ndarray], ridge: float = RIDGE,
               seed: int = 0, interface: dict | None = None, also: Sequence[str] = (),
               skip: Sequence[str] = ()) -> list[LayerFit]:
    """Refit, in place, the layers of the pruned ``graph`` that lost input channels, and the
    layers ``also`` (those that read a stream a removed block changed), but those in
    ``skip`` (the second factors of factorized matrices: their truncation is already the best
    fit over every row of the matrix, where a refit would fit the calibration data's).
    ``interface``: inputs that lost channels (an opened cache), cut from ``calib`` for it."""
    targets = _targets(graph, analysis, removed, also, skip)
    per_chunk = fitting_samples(reference, [n for t in targets for n in (
        t.node.inputs[0].name, t.node.outputs[0].name)], calib)
    if per_chunk is not None:  # under a memory cap: every sample, a chunk at a time
        return _chunked(graph, reference, analysis, removed, calib, targets, per_chunk, ridge,
                        seed, interface)
    fed = cut_arrays(calib, interface or {})
    original = fetched(reference, [t.node.outputs[0].name for t in targets], calib)
    sweep = planned(graph, fed, [t.node for t in targets])
    rng = np.random.default_rng(seed)
    fits = []
    with task("compensate", len(targets)) as advance:
        for layer in targets:
            name = layer.node.inputs[0].name
            x = (sweep.input_of(layer.node) if sweep is not None else
                 activations(export_skeleton(graph), [name], fed)[name])
            _, y = next(original)
            p, (y,) = design_rows(layer, x, [_kept(layer, y, analysis, removed)], rng)
            eq = NormalEquations(layer.intercept)  # errors from its sums: no product again
            eq.add(p, y)
            w0, sol = solver_matrix(layer), eq.solve(ridge)
            before, after = eq.rel_error(w0), eq.rel_error(sol)
            if after < before:
                _store(layer, sol)
            fits.append(LayerFit(layer.node.name, len(p), before, min(before, after)))
            advance()
    return fits


def _chunked(graph: gs.Graph, reference, analysis: ChannelAnalysis, removed: np.ndarray,
             calib, targets: list[Layer], per_chunk: int, ridge: float, seed: int,
             interface: dict | None) -> list[LayerFit]:
    """``compensate`` from normal equations accumulated over chunks of ``per_chunk`` samples
    (what a memory cap leaves room for): every sample counts, none is held beyond its chunk."""
    data = as_calibration(calib)
    chunks = [np.arange(lo, min(lo + per_chunk, data.samples))
              for lo in range(0, data.samples, per_chunk)]
    rng = np.random.default_rng(seed)
    fits = []
    with task("compensate", len(targets) * len(chunks)) as advance:
        for layer in targets:
            node = layer.node
            name, out = node.inputs[0].name, node.outputs[0].name
            intercept = layer.intercept
            eq = NormalEquations(intercept)
            skeleton = export_skeleton(graph)
            for idx in chunks:
                part = data.take(idx)
                x = activations(skeleton, [name], cut_arrays(part, interface or {}))[name]
                y = _kept(layer, activations(reference, [out], part)[out], analysis, removed)
                p, (y,) = design_rows(layer, x, [y], rng, max(1, MAX_ROWS // len(chunks)))
                eq.add(p, y)
                del x, y, p
                advance()
            w0 = solver_matrix(layer)
            sol = eq.solve(ridge)
            before, after = eq.rel_error(w0), eq.rel_error(sol)
            if after < before:
                _store(layer, sol)
            fits.append(LayerFit(node.name, eq.rows, before, min(before, after)))
    return fits
