"""Reconstruction-aware importance: how well each consumer layer can be rebuilt without a
channel, as channel pruning by reconstruction and structured OBS methods measure it.

For every layer that mixes channels (Conv, ConvTranspose, Gemm, MatMul with a constant
weight) the calibration data gives its input patch matrix ``P`` (im2col for convolutions:
``k`` columns per input channel) and its weight ``W`` (rows: input columns). With the Hessian
``H = P'P`` (centred when the layer has a bias to absorb the mean), removing the block ``B``
of a channel and refitting all other weights optimally costs

    loss(B) = tr(W_B' (H^-1)_BB^-1 W_B)

of output energy. Channels are removed greedily, the cheapest batch first (``STEPS`` rounds),
each removal updating the weights and ``H^-1`` (the optimal refit), so correlated channels
are not all judged redundant at once. A channel's score is the cumulative loss, relative to the layer's output
energy, at the step it goes (summed over the layers it feeds): the greedy order is kept, and
a channel that is never cheap scores high. Layers too wide for the greedy solve
(``MAX_COLUMNS``) use each channel's own output energy ``||P_B W_B||^2`` instead.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..analysis.model import ChannelAnalysis
from ..ir.graph import input_or_none
from ..progress import task
from ..rules import layer_of
from ..rules.layers import Layer
from ..search.activations import layer_gates, layer_inputs
from ..search.memory import cells

MAX_ROWS = 20_000  # rows of a layer's patch matrix (sampled)
MAX_CELLS = 16_000_000  # rows x columns of a patch matrix (bounds memory: 128 MB in float64)
MAX_COLUMNS = 640  # input columns (channels x kernel) solved greedily; wider: per channel
GRAM_FLOPS = 2e9  # rows x columns^2 of a greedy layer's Hessian (rows >= 4 x columns)
STEPS = 16  # greedy rounds per layer (each removes 1/STEPS of the channels)
RIDGE = 1e-3  # of the mean diagonal of H, as compensation regularises its refit


def _conv2d_rows(node: gs.Node, x: np.ndarray, rows: int, rng: np.random.Generator
                 ) -> np.ndarray | None:
    """Patch rows of a 2-D Conv at random output positions (numpy; None: not a plain 2-D
    Conv, the onnxruntime probe handles it)."""
    w = np.shape(node.inputs[1].values)
    if node.op != "Conv" or x.ndim != 4 or len(w) != 4 or node.attrs.get(
            "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return None
    kh, kw = w[2], w[3]
    sh, sw = node.attrs.get("strides", [1, 1])
    dh, dw = node.attrs.get("dilations", [1, 1])
    t, left, b, r = node.attrs.get("pads", [0, 0, 0, 0])
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)))
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    total = len(x) * oh * ow
    pick = rng.choice(total, size=rows, replace=False) if rows < total else np.arange(total)
    n, oy, ox = np.unravel_index(np.sort(pick), (len(x), oh, ow))
    taps = [xp[n, :, oy * sh + i * dh, ox * sw + j * dw] for i in range(kh) for j in range(kw)]
    return np.stack(taps, axis=-1).reshape(len(pick), -1)  # columns: (channel, ky, kx)


def _patches(view: Layer, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The layer's patch matrix [rows, channels * k] at sampled positions (float64)."""
    k = view.kernel
    cols = max(x.shape[1] * k if view.spatial else x.shape[-1], 1)
    most = cells(MAX_CELLS)  # fewer under a memory cap
    rows = min(MAX_ROWS, most // cols)
    if cols <= MAX_COLUMNS:  # the Hessian's cost bounds the rows, down to 4 per column
        rows = min(rows, max(4 * cols, int(GRAM_FLOPS // cols**2)))
    rows = max(rows, 1)
    if view.spatial:
        p = _conv2d_rows(view.node, x, rows, rng)
        if p is None:  # onnxruntime's own im2col, on the samples that fit
            per_sample = max(int(np.prod(x.shape[2:])), 1)
            n = max(1, min(len(x), 2 * most // (per_sample * cols)))
            pick = np.sort(rng.choice(len(x), size=n, replace=False)) if n < len(x) else slice(None)
            p = view.rows(x[pick])
    else:
        p = view.rows(x)
    if len(p) > rows:
        p = p[np.sort(rng.choice(len(p), size=rows, replace=False))]
    return p.astype(np.float64)


def layer_losses(p: np.ndarray, w: np.ndarray, k: int, centre: bool,
                 ridge: float = RIDGE) -> np.ndarray:
    """Per input channel of one layer (``k`` adjacent columns each): the cumulative relative
    output loss at the greedy step the channel is removed (wide layers: its own relative
    output energy). The greedy removes the cheapest ``1/STEPS`` of the channels at a time."""
    if centre:
        p = p - p.mean(axis=0, keepdims=True)
    channels = p.shape[1] // k
    if p.shape[1] > MAX_COLUMNS:
        return _own_blocks(p, w, k)
    h = p.T @ p
    energy = max(float(np.einsum("io,ij,jo->", w, h, w)), 1e-30)  # ||P W||^2
    h[np.diag_indices_from(h)] += ridge * max(float(np.trace(h)) / len(h), 1e-30)
    hinv = np.linalg.inv(h)
    w = w.astype(np.float64).copy()
    idx = np.arange(channels)
    left = np.ones(channels, dtype=bool)
    out = np.zeros(channels)
    eye = np.eye(k)
    per_step = max(1, channels // STEPS)
    total = 0.0
    while left.any():
        blocks = hinv.reshape(channels, k, channels, k)[idx, :, idx, :]  # [C, k, k]
        blocks[~left] = eye  # removed channels: anything invertible (never chosen)
        inv = np.linalg.inv(blocks)
        wb = w.reshape(channels, k, -1)
        loss = np.einsum("cko,ckl,clo->c", wb, inv, wb)
        loss[~left] = np.inf
        take = np.argsort(loss, kind="stable")[:min(per_step, int(left.sum()))]
        cols = (take[:, None] * k + np.arange(k)).reshape(-1)
        # remove them together: the optimal refit of the rest, and the inverse without them
        solve = np.linalg.pinv(hinv[np.ix_(cols, cols)])
        col = hinv[:, cols] @ solve
        joint = float(np.sum(w[cols] * (solve @ w[cols])))
        w -= col @ w[cols]
        hinv -= col @ hinv[cols, :]
        w[cols] = 0.0
        # within the batch, the greedy order by single losses; the batch's joint loss counts
        before = total
        total += max(joint, 0.0)
        single = np.maximum(loss[take], 0.0)
        share = np.cumsum(single) / max(single.sum(), 1e-300)
        out[take] = (before + share * (total - before)) / energy
        left[take] = False
    return out


def _own_blocks(p: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """Each channel's own output energy ||P_B W_B||^2 = tr(W_B' P_B'P_B W_B), relative to the
    layer's (estimated on a sample of rows): block-diagonal Hessian only, cheap."""
    channels = p.shape[1] // k
    pb = p.reshape(len(p), channels, k)
    gram = np.matmul(pb.transpose(1, 2, 0), pb.transpose(1, 0, 2))  # [C, k, k]
    wb = w.reshape(channels, k, -1)
    own = np.einsum("cko,ckl,clo->c", wb, gram, wb)
    sample = p[:: max(1, len(p) // 2000)]
    energy = float(np.sum((sample @ w) ** 2)) * len(p) / max(len(sample), 1)
    return own / max(energy, 1e-30)


def _own_energy(p, w, col_units, uniq, centre) -> np.ndarray:
    if centre:
        p = p - p.mean(axis=0, keepdims=True)
    energy = max(float(np.sum((p @ w) ** 2)), 1e-30)
    return np.array([np.sum((p[:, col_units == u] @ w[col_units == u]) ** 2)
                     for u in uniq]) / energy


def reconstruction_scores(graph: gs.Graph, reference: onnx.ModelProto,
                          analysis: ChannelAnalysis, calib, seed: int = 0
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(score per unit, covered per unit): the summed cumulative losses over the layers a
    unit feeds; units feeding no such layer are not covered (score 0)."""
    rng = np.random.default_rng(seed)
    consumers = layer_gates(graph, analysis)
    scores = np.zeros(analysis.num_units)
    covered = np.zeros(analysis.num_units, dtype=bool)
    prunable = ~analysis.unit_frozen
    with task("reconstruction scores", len(consumers)) as advance:
        for gate, node, x in layer_inputs(reference, consumers, calib):
            units = gate.units
            if not prunable[units].any():
                advance()
                continue
            view = layer_of(node)
            if view.data_axis(x.ndim) != gate.axis % x.ndim:
                advance()
                continue
            p, k = _patches(view, x, rng), view.kernel
            w = view.matrix()[0]
            if p.shape[1] != w.shape[0] or p.shape[1] != units.size * k:
                advance()
                continue
            # a block of columns per unit (a channel's kernel taps; a flattened channel's
            # positions), blocks side by side
            col_units = np.repeat(units, k)
            uniq, counts = np.unique(col_units, return_counts=True)
            order = np.argsort(col_units, kind="stable")
            centre = input_or_none(node, 2) is not None or view.intercept
            if np.all(counts == counts[0]):
                losses = layer_losses(p[:, order], w[order], int(counts[0]), centre)
            else:  # blocks of unequal size: each unit's own output energy
                losses = _own_energy(p, w, col_units, uniq, centre)
            np.add.at(scores, uniq, losses)
            covered[uniq] = True
            advance()
    return scores, covered
