"""Factorize wide matrices into two, so that their rank prunes as a channel group.

A sentence encoder's token table (30,522 x 384 in MiniLM) or a recognizer's classifier
(120 x 18,710 in PP-OCR rec) is often half the model's parameters, and channel pruning cannot
reach it: its short side is the model's hidden width or an output. Written as the product of
its singular value decomposition, ``W = (U S) Vt``, the short side becomes an inner axis of
its own: the rank. Each unit of rank costs ``m + n`` parameters, so cutting ``r`` of them saves
``r (m + n)``, and the units rank by their singular values (``U S`` has columns of norm
``S_i``, ``Vt`` orthonormal rows): keeping the first ``k`` is the best rank-``k``
approximation of the matrix, and what the pruned graph computes is the masked factorized one,
which the oracle checks as for any other group.

- ``Gather(E, ids)`` (a constant table, axis 0) becomes ``MatMul(Gather(U S, ids), Vt)``;
- ``MatMul(X, W)`` with a constant ``W`` [K, N] (and a ``Gemm`` without transposed ``A``)
  becomes ``MatMul(MatMul(X, U S), Vt)``, ``Vt`` [K, N] (Gemm keeps its bias and ``transB``).

A full-rank factorization stores ``short x short`` more parameters, so only matrices much
longer than wide are factorized (``aspect``), and after the cut ``unfactorize`` multiplies the
factors back into one matrix wherever the kept rank no longer saves anything (the original
array itself when no unit was cut).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis.size import graph_params
from ..ir.graph import unique_name

ASPECT = 8.0  # long side / short side at least: a full-rank factorization adds at most 1/8
SHARE = 0.05  # of the model's parameters, at least (smaller matrices are not worth a search)
MIN_RANK = 16  # the short side, at least
KINDS = ("table", "linear")


@dataclass
class Factor:
    """One factorized matrix: the node that read it and the two it reads now."""

    kind: str  # "table" (Gather) or "linear" (MatMul / Gemm)
    node: str  # the original reader (kept; it reads the second factor now)
    first: str  # the node computing with the first factor (a Gather or a MatMul)
    weight: str  # the original initializer's name
    a: str  # U S: [m, r] for a table, [K, r] for a linear layer
    b: str  # Vt: [r, n] ([n, r] for a Gemm with transB)
    original: np.ndarray  # the matrix as it was (restored exactly when nothing is cut)
    trans_b: bool = False

    @property
    def full_rank(self) -> int:
        return int(min(self.original.shape))


def _single_reader(t: gs.Tensor) -> bool:
    return isinstance(t, gs.Constant) and len(t.outputs) == 1


def _long(shape: tuple[int, ...], aspect: float) -> bool:
    return len(shape) == 2 and min(shape) >= MIN_RANK and max(shape) >= aspect * min(shape)


def candidates(graph: gs.Graph, aspect: float = ASPECT, share: float = SHARE,
               kinds: tuple[str, ...] = KINDS) -> list[tuple[gs.Node, str]]:
    """(node, kind) of the matrices worth factorizing: constant, read by this node alone,
    ``aspect`` times longer than wide, at least ``share`` of the model's parameters; a table's
    rows are the long side (a vocabulary), a linear layer's outputs (a classifier)."""
    total = max(graph_params(graph), 1)
    out = []
    for node in graph.nodes:
        if node.op == "Gather" and len(node.inputs) == 2 and int(node.attrs.get("axis", 0)) == 0:
            w, kind = node.inputs[0], "table"
            ok = _single_reader(w) and _long(w.shape, aspect) and w.shape[0] > w.shape[1]
        elif node.op in ("MatMul", "Gemm") and len(node.inputs) >= 2:
            w, kind = node.inputs[1], "linear"
            if not _single_reader(w) or isinstance(node.inputs[0], gs.Constant):
                continue
            shape = tuple(w.shape)
            if node.op == "Gemm":
                if int(node.attrs.get("transA", 0)) or float(node.attrs.get("alpha", 1.0)) != 1.0:
                    continue
                shape = shape[::-1] if int(node.attrs.get("transB", 0)) else shape
            ok = _long(shape, aspect) and shape[1] > shape[0]
        else:
            continue
        if ok and kind in kinds and np.issubdtype(w.values.dtype, np.floating) and \
                w.values.size >= share * total:
            out.append((node, kind))
    return out


def _svd(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U S, Vt) of ``w`` [m, n] at full rank min(m, n), computed in float64, in w's type.

    From the eigenvectors V of the smaller Gram matrix (taking w tall, [p, q] with p >= q):
    U S = w V and Vt = V^T, so w = (U S) Vt to float64 rounding whatever w's conditioning (V
    is orthogonal), the columns in decreasing singular value; a wide w is its transpose's
    factors turned around. MiniLM's 30,522 x 384 token table: 0.2 s, where numpy's SVD of the
    tall matrix took 1.0-2.3 s."""
    wide = w.shape[0] < w.shape[1]
    x = w.astype(np.float64).T if wide else w.astype(np.float64)
    _, v = np.linalg.eigh(x.T @ x)
    v = v[:, ::-1]  # decreasing eigenvalues: the leading singular directions first
    us = x @ v
    if wide:  # w = V (U S)^T: w's U S is V S, its Vt is U^T
        s = np.linalg.norm(us, axis=0)
        a, b = v * s, (us / np.maximum(s, np.finfo(np.float64).tiny)).T
    else:
        a, b = us, v.T
    return np.ascontiguousarray(a.astype(w.dtype)), np.ascontiguousarray(b.astype(w.dtype))


def factorize(graph: gs.Graph, aspect: float = ASPECT, share: float = SHARE,
              kinds: tuple[str, ...] = KINDS) -> list[Factor]:
    """Factorize every candidate of ``kinds`` in place (at full rank: the same function to
    float rounding); returns what was done, for ``unfactorize``."""
    done = []
    for node, kind in candidates(graph, aspect, share, kinds):
        w = node.inputs[0] if kind == "table" else node.inputs[1]
        original = np.asarray(w.values)
        node.name = node.name or unique_name(graph, f"{node.op}_{w.name}")  # found by name
        trans_b = node.op == "Gemm" and bool(int(node.attrs.get("transB", 0)))
        a, b = _svd(original.T if trans_b else original)
        a_t = gs.Constant(unique_name(graph, f"{w.name}.factor_a"), np.ascontiguousarray(a))
        b_t = gs.Constant(unique_name(graph, f"{w.name}.factor_b"),
                          np.ascontiguousarray(b.T if trans_b else b))
        fed = node.inputs[1] if kind == "table" else node.inputs[0]  # ids, or the activation
        shape = None if fed.shape is None else (
            [*fed.shape, a.shape[1]] if kind == "table" else [*fed.shape[:-1], a.shape[1]])
        inner = gs.Variable(unique_name(graph, f"{w.name}.factor_inner"), dtype=original.dtype,
                            shape=shape)
        first = unique_name(graph, f"{node.name}.factor")
        if kind == "table":
            graph.nodes.append(gs.Node("Gather", first, {"axis": 0}, [a_t, node.inputs[1]],
                                       [inner]))
            node.op, node.attrs = "MatMul", {}
            _rewire(node, [inner, b_t])
        else:
            graph.nodes.append(gs.Node("MatMul", first, {}, [node.inputs[0], a_t], [inner]))
            node.inputs[0], node.inputs[1] = inner, b_t
        done.append(Factor(kind, node.name, first, w.name, a_t.name, b_t.name, original,
                           trans_b))
    if done:
        graph.cleanup().toposort()
    return done


def unfactorize(graph: gs.Graph, factors: list[Factor]) -> list[dict]:
    """Multiply back the factors whose kept rank saves nothing: a matrix with no unit cut gets
    its original array back, one cut too little the product of its factors (the same
    low-rank function). Returns, per matrix, ``{"matrix", "shape", "rank" (kept of
    "full_rank"), "factorized" (left as two factors)}``."""
    nodes = {n.name: n for n in graph.nodes}
    out = []
    for f in factors:
        node, first = nodes.get(f.node), nodes.get(f.first)
        if node is None or first is None:
            continue  # removed with a block
        a_t = first.inputs[0] if f.kind == "table" else first.inputs[1]
        b_t = node.inputs[1]
        a, b = np.asarray(a_t.values), np.asarray(b_t.values)
        rank, m, n = a.shape[1], a.shape[0], b.shape[0] if f.trans_b else b.shape[1]
        out.append({"matrix": f.weight, "shape": list(f.original.shape), "rank": int(rank),
                    "full_rank": f.full_rank, "factorized": rank * (m + n) < m * n})
        if out[-1]["factorized"]:
            continue
        product_shape = (n, m) if f.trans_b else (m, n)
        if rank == f.full_rank and product_shape == f.original.shape:
            matrix = f.original  # nothing of this matrix was cut: exactly what it was
        else:
            product = a.astype(np.float64) @ (b.T if f.trans_b else b).astype(np.float64)
            matrix = (product.T if f.trans_b else product).astype(f.original.dtype)
        w = gs.Constant(f.weight, np.ascontiguousarray(matrix))
        if f.kind == "table":
            node.op, node.attrs = "Gather", {"axis": 0}
            _rewire(node, [w, first.inputs[1]])
        else:
            node.inputs[0], node.inputs[1] = first.inputs[0], w
        first.outputs.clear()
        first.inputs.clear()
    graph.cleanup().toposort()
    return out



def _rewire(node: gs.Node, inputs: list[gs.Tensor]) -> None:
    node.inputs.clear()
    node.inputs.extend(inputs)
