"""Channel atoms: the raw material of the dependency analysis.

Every position on a tracked (tensor, axis) holds an atom id. Rules create atoms (a layer's
output channels), copy them (elementwise ops), rearrange them (concat, split, reshape) and
join them (``union``: a residual add makes channel i of both operands one unit). After
propagation, connected components of the union graph are the removable *units*.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


@dataclass(frozen=True)
class Claim:
    """A parameter slice owned by atoms: ``param[..., i, ...]`` on ``axis`` belongs to ``atoms[i]``."""

    node: str
    param: str
    axis: int
    atoms: np.ndarray


@dataclass(frozen=True)
class GatePoint:
    """An input where a node mixes channels (Conv, Gemm, MatMul): the oracle gates it."""

    node: str
    input_index: int
    axis: int
    atoms: np.ndarray
    batched: bool = True  # the gated tensor's axis 0 is the batch (False: a weight)
    kind: str = "mul"  # "stats": the node's statistics are weighted by the gates (norms)


class AtomTable:
    """Allocates atoms, records unions and freezes, and solves them into units."""

    def __init__(self) -> None:
        self.count = 0
        self._edges: list[tuple[np.ndarray, np.ndarray]] = []
        self._frozen: list[tuple[np.ndarray, str]] = []
        self._links: list[tuple[np.ndarray, np.ndarray]] = []

    def fresh(self, n: int) -> np.ndarray:
        out = np.arange(self.count, self.count + n, dtype=np.int64)
        self.count += n
        return out

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        if a.shape != b.shape:
            raise ValueError(f"union of atom arrays with shapes {a.shape} and {b.shape}")
        self._edges.append((a.ravel(), b.ravel()))

    def union_blocks(self, atoms: np.ndarray, block: int) -> np.ndarray:
        """Join each run of ``block`` consecutive atoms; return one representative per run."""
        runs = np.asarray(atoms, dtype=np.int64).reshape(-1, block)
        for j in range(1, block):
            self.union(runs[:, 0], runs[:, j])
        return runs[:, 0].copy()

    def link(self, kept: np.ndarray, needs: np.ndarray) -> None:
        """While atom ``kept[i]`` stays, atom ``needs[i]`` must stay (a gathered copy of it)."""
        kept, needs = np.asarray(kept, dtype=np.int64), np.asarray(needs, dtype=np.int64)
        if kept.shape != needs.shape:
            raise ValueError(f"link of atom arrays with shapes {kept.shape} and {needs.shape}")
        self._links.append((kept.ravel(), needs.ravel()))

    def links(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._links:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return (np.concatenate([k for k, _ in self._links]),
                np.concatenate([n for _, n in self._links]))

    def freeze(self, atoms: np.ndarray, reason: str) -> None:
        atoms = np.asarray(atoms, dtype=np.int64).ravel()
        if atoms.size:
            self._frozen.append((atoms, reason))

    def solve(self) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Return (unit of each atom, frozen flag per unit, first freeze reason per unit)."""
        n = self.count
        if self._edges:
            rows = np.concatenate([e[0] for e in self._edges])
            cols = np.concatenate([e[1] for e in self._edges])
        else:
            rows = cols = np.zeros(0, dtype=np.int64)
        adj = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n))
        n_units, labels = connected_components(adj, directed=False)
        frozen = np.zeros(n_units, dtype=bool)
        reasons: list[str | None] = [None] * n_units
        for atoms, reason in self._frozen:
            for unit in np.unique(labels[atoms]):
                if not frozen[unit]:
                    frozen[unit] = True
                    reasons[unit] = reason
        return labels.astype(np.int64), frozen, reasons
