"""Compensation: refit every layer that lost input channels so that, on calibration data, it
reproduces what the original layer produced (ridge least squares on its remaining inputs,
with the bias absorbing the removed channels' mean contribution). Layers are refit in graph
order, each one seeing the outputs of the layers already refit, so errors do not pile up.

Convolutions are solved through their patch matrix ("im2col"), taken from onnxruntime itself:
a probe Conv/ConvTranspose whose one-hot weights copy every (input channel, kernel position)
to an output channel gives exactly the columns the layer multiplies with its weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

from ..analysis.model import ChannelAnalysis
from ..ir.arrays import Calibration, axes_of
from ..ir.graph import export_skeleton, input_or_none
from ..ir.runtime import computing, run_batched, session
from ..ir.weights import Skeleton, proto
from ..progress import task
from ..search.memory import cap, room, rows_for, search_budget
from ..verify.checks import cut_arrays
from .normal_equations import NormalEquations

RIDGE = 1e-3  # of the mean input energy (the diagonal of the normal equations)
MAX_ROWS = 40_000  # rows of the least-squares problem per layer (sampled)
MAX_CELLS = 30_000_000  # rows x columns of the patch matrix
FETCH_BYTES = 512 * 2**20  # activations fetched per run of a model (bounds memory)
CELL_BYTES = 24  # bytes a patch-matrix cell costs while solved (float32 + float64 copies)


@dataclass(frozen=True)
class LayerFit:
    node: str
    rows: int
    error_before: float  # relative error of the pruned layer on calibration data
    error_after: float  # ... after the refit


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
    one = activations(model, names, _calibration(feeds).take(np.arange(1)))
    per_sample = max(max((a.nbytes for a in one.values()), default=0), 1)
    fit = max(1, int(room(per_sample * n, share) // per_sample))
    return None if fit >= n else fit


def _calibration(feeds: dict) -> Calibration:
    return feeds if isinstance(feeds, Calibration) else Calibration(dict(feeds), axes_of(feeds))


def within_cap(model: onnx.ModelProto | Skeleton, names: list[str], feeds: dict,
               share: float = 0.1, seed: int = 0) -> dict:
    """``feeds``, or under a memory cap (``--memory``) as many of its samples (chosen at
    random, in order) as ``fitting_samples`` allows."""
    fit = fitting_samples(model, names, feeds, share)
    if fit is None:
        return feeds
    data = _calibration(feeds)
    pick = np.sort(np.random.default_rng(seed).choice(data.samples, size=fit, replace=False))
    return data.take(pick)


def cells(default: int = MAX_CELLS) -> int:
    """Patch-matrix cells one solve may take: ``default``, or fewer under a memory cap."""
    return max(1, room(default * CELL_BYTES, 0.25) // CELL_BYTES)


def patch_matrix(node: gs.Node, x: np.ndarray) -> np.ndarray:
    """The patch matrix [rows, Cin * k] of a Conv/ConvTranspose on input ``x``."""
    w = np.asarray(node.inputs[1].values)
    cin = x.shape[1]
    kernel = w.shape[2:]
    k = int(np.prod(kernel))
    eye = np.zeros((cin * k, cin, *kernel), np.float32)
    for c in range(cin):
        eye[c * k:(c + 1) * k, c] = np.eye(k, dtype=np.float32).reshape(k, *kernel)
    if node.op == "ConvTranspose":
        eye = eye.transpose(1, 0, *range(2, eye.ndim)).copy()  # [Cin, Cin*k, ...]
    attrs = {a: v for a, v in node.attrs.items() if a != "group"}
    probe = helper.make_node(node.op, ["x", "w"], ["y"], **attrs)
    graph = helper.make_graph([probe], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(eye, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    y = session(model).run(None, {"x": x.astype(np.float32)})[0]
    return np.moveaxis(y, 1, -1).reshape(-1, cin * k)


def _solve(p: np.ndarray, y: np.ndarray, ridge: float, intercept: bool) -> np.ndarray:
    """argmin ||[p 1] w - y||^2 + ridge * mean(diag) * ||w_p||^2; rows of w: p's columns (+1)."""
    a = np.concatenate([p, np.ones((len(p), 1), p.dtype)], axis=1) if intercept else p
    a = a.astype(np.float64, copy=False)
    gram = a.T @ a
    reg = ridge * np.trace(gram[: p.shape[1], : p.shape[1]]) / max(p.shape[1], 1)
    gram[np.arange(p.shape[1]), np.arange(p.shape[1])] += reg
    return np.linalg.solve(gram, a.T @ y.astype(np.float64))


def _rel_error(p: np.ndarray, w: np.ndarray, y: np.ndarray, intercept: bool) -> float:
    pred = p @ w[: p.shape[1]] + (w[-1] if intercept else 0.0)
    return float(np.linalg.norm(pred - y) / max(np.linalg.norm(y), 1e-12))


def layer_matrix(node: gs.Node) -> tuple[np.ndarray, np.ndarray | None]:
    """The layer's weight as a [inputs(*k), outputs] matrix, and its bias as the solver sees it."""
    w = np.asarray(node.inputs[1].values, np.float64)
    b = input_or_none(node, 2)
    bias = None if b is None else np.asarray(b.values, np.float64).reshape(-1)
    if node.op == "Conv":
        return w.reshape(w.shape[0], -1).T, bias
    if node.op == "ConvTranspose":
        cin, cout = w.shape[:2]
        k = int(np.prod(w.shape[2:]))
        return w.reshape(cin, cout, k).transpose(0, 2, 1).reshape(cin * k, cout), bias
    if node.op == "Gemm":
        alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
        mat = (w.T if int(node.attrs.get("transB", 0)) else w) * alpha
        return mat, None if bias is None else bias * beta
    return w, None  # MatMul


def native_weight(node: gs.Node, mat: np.ndarray) -> np.ndarray:
    """A solver matrix [inputs(*k), outputs] in the layer's own weight layout and dtype."""
    w_old = np.asarray(node.inputs[1].values)
    if node.op == "Conv":
        new = mat.T.reshape(w_old.shape)
    elif node.op == "ConvTranspose":
        cin, cout = w_old.shape[:2]
        k = int(np.prod(w_old.shape[2:]))
        new = mat.reshape(cin, k, cout).transpose(0, 2, 1).reshape(w_old.shape)
    elif node.op == "Gemm":
        mat = mat / float(node.attrs.get("alpha", 1.0))
        new = mat.T if int(node.attrs.get("transB", 0)) else mat
    else:
        new = mat
    return np.ascontiguousarray(new.astype(w_old.dtype))


def solver_matrix(node: gs.Node, intercept: bool) -> np.ndarray:
    """``layer_matrix``'s weight with its bias as a last row (zeros without one) where the
    solver fits an intercept: the layer as the least-squares problem sees it."""
    w0, b0 = layer_matrix(node)
    if not intercept:
        return w0
    return np.concatenate([w0, (b0 if b0 is not None else np.zeros(w0.shape[1]))[None]])


def _kept(node: gs.Node, y: np.ndarray, analysis: ChannelAnalysis, removed: np.ndarray
          ) -> np.ndarray:
    """The original output ``y`` of a layer at the channels its pruned version still makes."""
    axis = 1 if node.op != "MatMul" else y.ndim - 1
    keep = analysis.keep_mask((node.outputs[0].name, axis), removed)
    return y if keep is None else np.compress(keep, y, axis=axis)


def _store(node: gs.Node, sol: np.ndarray, intercept: bool) -> None:
    dtype = node.inputs[1].values.dtype
    mat = sol[:-1] if intercept else sol
    bias = sol[-1] if intercept else None
    new = native_weight(node, mat)
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


def refittable(node: gs.Node) -> bool:
    """A layer compensation can refit on its own: a Conv/ConvTranspose (one group), Gemm or
    MatMul with a constant 2-D (or conv) weight and bias that no other node reads."""
    if node.op not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(node.inputs) < 2:
        return False
    w = node.inputs[1]
    if not isinstance(w, gs.Constant) or len(w.outputs) != 1:
        return False
    if node.op in ("Conv", "ConvTranspose") and int(node.attrs.get("group", 1)) != 1:
        return False
    if node.op in ("Gemm", "MatMul") and np.ndim(w.values) != 2:
        return False
    if node.op == "Gemm" and int(node.attrs.get("transA", 0)):
        return False
    bias = input_or_none(node, 2)
    return bias is None or (isinstance(bias, gs.Constant) and len(bias.outputs) == 1)


def _targets(graph: gs.Graph, analysis: ChannelAnalysis, removed: np.ndarray,
             also: Sequence[str] = ()) -> list[gs.Node]:
    """Layers that lost input channels, or read a stream a removed block changed (``also``),
    and can be refit on their own (weights not shared)."""
    lost = {g.node for g in analysis.gates if removed[g.units].any()} | set(also)
    return [n for n in graph.nodes if n.name in lost and refittable(n)]


def design_rows(node: gs.Node, x: np.ndarray, ys: list[np.ndarray], rng: np.random.Generator,
                max_rows: int = MAX_ROWS) -> tuple[np.ndarray, list[np.ndarray]]:
    """The least-squares rows of a layer on input ``x``: its patch matrix (convolutions) or its
    input vectors, at most ``MAX_ROWS`` of them (sampled), with the same rows of each output
    ``ys`` (channels first for convolutions, last otherwise)."""
    if node.op in ("Conv", "ConvTranspose"):
        per_sample = max((int(np.prod(y.shape[2:])) for y in ys), default=int(np.prod(
            x.shape[2:])))
        cols = x.shape[1] * int(np.prod(node.inputs[1].values.shape[2:]))
        n = max(1, min(len(x), cells() // max(cols * per_sample, 1)))
        pick = rng.choice(len(x), size=n, replace=False) if n < len(x) else slice(None)
        p = patch_matrix(node, x[pick])
        ys = [np.moveaxis(y[pick], 1, -1).reshape(-1, y.shape[1]) for y in ys]
    else:
        p, ys = x.reshape(-1, x.shape[-1]), [y.reshape(-1, y.shape[-1]) for y in ys]
    limit = max_rows if cap() is None else max(1, min(max_rows, cells() // max(p.shape[1], 1)))
    if len(p) > limit:
        rows = rng.choice(len(p), size=limit, replace=False)
        p, ys = p[rows], [y[rows] for y in ys]
    return p, ys


def compensate(graph: gs.Graph, reference: onnx.ModelProto, analysis: ChannelAnalysis,
               removed: np.ndarray, calib: dict[str, np.ndarray], ridge: float = RIDGE,
               seed: int = 0, interface: dict | None = None, also: Sequence[str] = ()
               ) -> list[LayerFit]:
    """Refit, in place, the layers of the pruned ``graph`` that lost input channels, and the
    layers ``also`` (those that read a stream a removed block changed).
    ``interface``: inputs that lost channels (an opened cache), cut from ``calib`` for it."""
    targets = _targets(graph, analysis, removed, also)
    per_chunk = fitting_samples(reference, [n for t in targets for n in (
        t.inputs[0].name, t.outputs[0].name)], calib)
    if per_chunk is not None:  # under a memory cap: every sample, a chunk at a time
        return _chunked(graph, reference, analysis, removed, calib, targets, per_chunk, ridge,
                        seed, interface)
    fed = cut_arrays(calib, interface or {})
    original = fetched(reference, [n.outputs[0].name for n in targets], calib)
    rng = np.random.default_rng(seed)
    fits = []
    with task("compensate", len(targets)) as advance:
        for node in targets:
            name = node.inputs[0].name
            x = activations(export_skeleton(graph), [name], fed)[name]
            _, y = next(original)
            p, (y,) = design_rows(node, x, [_kept(node, y, analysis, removed)], rng)
            intercept = node.op != "MatMul"
            w0 = solver_matrix(node, intercept)
            sol = _solve(p, y, ridge, intercept)
            before, after = _rel_error(p, w0, y, intercept), _rel_error(p, sol, y, intercept)
            if after < before:
                _store(node, sol, intercept)
            fits.append(LayerFit(node.name, len(p), before, min(before, after)))
            advance()
    return fits


def _chunked(graph: gs.Graph, reference, analysis: ChannelAnalysis, removed: np.ndarray,
             calib, targets: list[gs.Node], per_chunk: int, ridge: float, seed: int,
             interface: dict | None) -> list[LayerFit]:
    """``compensate`` from normal equations accumulated over chunks of ``per_chunk`` samples
    (what a memory cap leaves room for): every sample counts, none is held beyond its chunk."""
    data = _calibration(calib)
    chunks = [np.arange(lo, min(lo + per_chunk, data.samples))
              for lo in range(0, data.samples, per_chunk)]
    rng = np.random.default_rng(seed)
    fits = []
    with task("compensate", len(targets) * len(chunks)) as advance:
        for node in targets:
            name, out = node.inputs[0].name, node.outputs[0].name
            intercept = node.op != "MatMul"
            eq = NormalEquations(intercept)
            skeleton = export_skeleton(graph)
            for idx in chunks:
                part = data.take(idx)
                x = activations(skeleton, [name], cut_arrays(part, interface or {}))[name]
                y = _kept(node, activations(reference, [out], part)[out], analysis, removed)
                p, (y,) = design_rows(node, x, [y], rng, max(1, MAX_ROWS // len(chunks)))
                eq.add(p, y)
                del x, y, p
                advance()
            w0 = solver_matrix(node, intercept)
            sol = eq.solve(ridge)
            before, after = eq.rel_error(w0), eq.rel_error(sol)
            if after < before:
                _store(node, sol, intercept)
            fits.append(LayerFit(node.name, eq.rows, before, min(before, after)))
    return fits
