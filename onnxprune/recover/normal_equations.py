"""A layer's least-squares refit from its normal equations, accumulated over chunks of rows:
what compensation solves under a memory cap, where a layer's inputs on every calibration
sample do not fit at once (the solution equals the one from all rows together)."""

from __future__ import annotations

import numpy as np


class NormalEquations:
    """``G = A^T A``, ``B = A^T Y`` and ``sum(Y^2)`` of rows ``A = [P 1]`` (the ones column with
    ``intercept``) and targets ``Y``, added a chunk at a time."""

    def __init__(self, intercept: bool):
        self.intercept = intercept
        self.g = self.b = None
        self.yy = 0.0
        self.rows = 0

    def add(self, p: np.ndarray, y: np.ndarray) -> None:
        a = p.astype(np.float64, copy=False)
        if self.intercept:
            a = np.concatenate([a, np.ones((len(a), 1))], axis=1)
        y = y.astype(np.float64, copy=False)
        g, b = a.T @ a, a.T @ y
        self.g = g if self.g is None else self.g + g
        self.b = b if self.b is None else self.b + b
        self.yy += float(np.sum(y * y))
        self.rows += len(a)

    def solve(self, ridge: float) -> np.ndarray:
        """argmin ||A w - Y||^2 + ridge * mean(diag of P's block) * ||w_P||^2 (``_solve``'s)."""
        d = self.g.shape[0] - (1 if self.intercept else 0)
        g = self.g.copy()
        g[np.arange(d), np.arange(d)] += ridge * np.trace(self.g[:d, :d]) / max(d, 1)
        return np.linalg.solve(g, self.b)

    def rel_error(self, w: np.ndarray) -> float:
        """||A w - Y|| / ||Y|| from the accumulated sums."""
        sq = float(np.sum(w * (self.g @ w)) - 2 * np.sum(w * self.b) + self.yy)
        return float(np.sqrt(max(sq, 0.0)) / max(np.sqrt(self.yy), 1e-12))
