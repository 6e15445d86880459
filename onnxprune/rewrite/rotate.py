"""Linear bottlenecks turned to their principal basis, so that a cut of their weakest channels
is the best cut of that width.

Where a layer's output channels ``z`` are read only by layers linear in them (nothing between:
an autoencoder's code, two Linear layers in a row, a convolution's output read by the next
convolution before any activation), any invertible ``T`` between the two leaves the function
unchanged: the producer computes ``z' = T^-1 z``, its readers read ``W T``. In the original
basis each channel carries a share of everything, and a cut of ``k`` of them loses what those
carried; chosen on calibration data, ``T`` makes the new channels uncorrelated and each
one's contribution to the readers' outputs a separate term: with ``C`` the channels' second
moment and ``M`` the readers' weights' Gram, ``T = C^1/2 Q S`` where ``Q`` holds the
eigenvectors of ``C^1/2 M C^1/2`` (eigenvalues ``e_j``, largest first) and ``S`` scales channel
``j`` so that both its second moment and its readers' weight energy read ``sqrt(e_j)``.
Dropping channel ``j`` then costs the readers' outputs ``e_j``, and every criterion, by
activations or by weight magnitudes, ranks channels that are each worth what they carry (a
principal component analysis of the code, weighted by what reads it).

Only layers the rules view as matrix products (``rules/layers.py``; a MatMul with the Add of
its bias after it, as exporters write a Linear layer) are rotated, each weight and bias its
own (no other node reads them), in float32; the pass checks the rotated graph
computes what the graph before did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..rules import layer_of
from ..rules.layers import Layer

FLOOR = 1e-4  # of the mean second moment, added to its diagonal (C^1/2's condition <= 100)
ENERGY_FLOOR = 1e-4  # of the largest, what a channel's scale reads at least (condition 10x)
CHUNK = 1 << 16  # rows per product when the second moment is summed


@dataclass(frozen=True)
class Bottleneck:
    """``tensor``: the producer's output (after ``bias``, the Add of a MatMul's bias, where
    there is one), read by ``readers`` only."""

    tensor: str
    producer: Layer
    readers: tuple[Layer, ...]
    bias: gs.Node | None = None

    @property
    def width(self) -> int:
        return int(self.producer.w.shape[self.producer.weight_out_axis()])


def _own(layer: Layer) -> bool:
    """Its weight and bias its own, in float32 (the rotation's products are float64)."""
    return layer.own_weights() and layer.w.dtype == np.float32


def _producer(node: gs.Node) -> Layer | None:
    """``node`` as a layer whose output channels can be mixed: its own float32 weight, and
    a bias (if any) of one value per output channel."""
    layer = layer_of(node)
    if layer is None or not _own(layer):
        return None
    w, b = layer.matrix()
    return layer if b is None or b.size == w.shape[1] else None


def _bias_add(layer: Layer) -> gs.Node | None:
    """The Add that alone reads a MatMul's output and adds it a bias of its own: a float32
    vector of one value per output channel (how exporters write a Linear layer)."""
    out = layer.node.outputs[0]
    if layer.intercept or len(out.outputs) != 1 or out.outputs[0].op != "Add":
        return None
    add = out.outputs[0]
    other = [i for i in add.inputs if i is not out]
    if len(add.inputs) != 2 or len(other) != 1 or not isinstance(other[0], gs.Constant) or \
            len(other[0].outputs) != 1:
        return None
    c = np.asarray(other[0].values)
    return add if c.dtype == np.float32 and c.ndim == 1 and c.size == layer.w.shape[1] else None


def bottlenecks(graph: gs.Graph, skip: frozenset[str] = frozenset()) -> list[Bottleneck]:
    """The producers whose output only linear layers read on its channel axis (their data
    input), none of them in ``skip`` (by node name), nor the output a graph output."""
    outputs = {t.name for t in graph.outputs}
    found = []
    for node in graph.nodes:
        if node.name in skip or len(node.outputs) != 1:
            continue
        producer = _producer(node)
        if producer is None:
            continue
        bias = _bias_add(producer)
        t = (bias or node).outputs[0]
        if {t.name, node.outputs[0].name} & outputs or not t.outputs:
            continue
        readers = []
        for reader in t.outputs:
            view = layer_of(reader)
            if view is None or reader.name in skip or reader.inputs[0] is not t or \
                    not _own(view) or view.channels_last != producer.channels_last or \
                    any(i is t for i in reader.inputs[1:]):
                break
            readers.append(view)
        else:
            b = Bottleneck(t.name, producer, tuple(readers), bias)
            if len({r.node.name for r in readers}) == len(readers) and b.width >= 2:
                found.append(b)
    return found


def second_moment(producer: Layer, z: np.ndarray) -> np.ndarray:
    """``E[z z^T]`` over every position of the producer's output ``z`` (float64)."""
    rows = producer.out_rows(np.asarray(z))
    c = np.zeros((rows.shape[1], rows.shape[1]))
    for lo in range(0, len(rows), CHUNK):
        part = rows[lo:lo + CHUNK].astype(np.float64)
        c += part.T @ part
    return c / max(len(rows), 1)


def _reader_rows(reader: Layer, width: int) -> np.ndarray:
    """The reader's weight as [width, kernel x outputs] (channel-major rows)."""
    w, _ = reader.matrix()
    return w.reshape(width, -1)


def basis(moment: np.ndarray, readers: tuple[Layer, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(T, T^-1)`` for channels of second moment ``moment`` read by ``readers``: the new
    channels uncorrelated and ordered by what they carry, ``e_j``, each one's second moment
    and its readers' weight energy both ``sqrt(e_j)``."""
    n = len(moment)
    c = moment + FLOOR * max(float(np.trace(moment)) / n, 1e-30) * np.eye(n)
    vals, vecs = np.linalg.eigh(c)
    vals = np.maximum(vals, vals.max() * 1e-12)
    half, inv_half = (vecs * np.sqrt(vals)) @ vecs.T, (vecs / np.sqrt(vals)) @ vecs.T
    m = sum(r @ r.T for r in (_reader_rows(v, n) for v in readers))
    energy, q = np.linalg.eigh(half @ m @ half)
    order = np.argsort(energy)[::-1]
    q, energy = q[:, order], energy[order]
    # balanced: channel j's second moment and its readers' weight energy both sqrt(energy_j)
    # (floored), so that weight magnitudes rank the channels as activations do
    scale = np.maximum(energy, max(float(energy[0]), 1e-30) * ENERGY_FLOOR) ** 0.25
    return (half @ q) / scale, (q.T @ inv_half) * scale[:, None]


def rotate(b: Bottleneck, t: np.ndarray, t_inv: np.ndarray) -> None:
    """Rewrite the producer to compute ``T^-1 z`` and its readers to read ``W T`` (in place;
    the readers' biases are unchanged)."""
    w, bias = b.producer.matrix()  # [inputs, width], the bias times Gemm's beta
    _weight(b.producer, w @ t_inv.T)
    if bias is not None:
        node = b.producer.node
        old = node.inputs[2]
        beta = float(node.attrs.get("beta", 1.0)) if node.op == "Gemm" else 1.0
        new = (t_inv @ bias / beta).reshape(np.shape(old.values))
        node.inputs[2] = gs.Constant(old.name, np.ascontiguousarray(new.astype(np.float32)))
    if b.bias is not None:  # a MatMul's: the Add's constant
        i = next(k for k, v in enumerate(b.bias.inputs) if isinstance(v, gs.Constant))
        old = b.bias.inputs[i]
        new = t_inv @ np.asarray(old.values, np.float64)
        b.bias.inputs[i] = gs.Constant(old.name, np.ascontiguousarray(new.astype(np.float32)))
    n = len(t)
    for reader in b.readers:
        rows, _ = reader.matrix()
        _weight(reader, (t.T @ rows.reshape(n, -1)).reshape(rows.shape))


def _weight(layer: Layer, mat: np.ndarray) -> None:
    old = layer.node.inputs[1]
    layer.node.inputs[1] = gs.Constant(old.name, layer.weight(mat))
