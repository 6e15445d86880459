"""Global: one threshold over scores normalized per group; the smallest threshold that
reaches the target wins."""

from __future__ import annotations

import numpy as np

from .common import Space, Target


def select_global(space: Space, norm_scores: np.ndarray, target: Target) -> np.ndarray:
    def at(tau: float) -> np.ndarray:
        counts = [space.legal(i, int(np.sum(norm_scores[g.order] < tau)))
                  for i, g in enumerate(space.groups)]
        return space.mask(counts)

    if not space.groups:
        return space.mask([])
    taus = np.unique(np.concatenate([norm_scores[g.order] for g in space.groups]))
    taus = np.append(taus, np.inf)
    lo, hi = 0, len(taus) - 1  # at(taus[0]) removes nothing; at(inf) removes all it may
    if space.reduction(at(taus[hi]), target) < target.fraction:
        return at(taus[hi])
    while lo < hi:
        mid = (lo + hi) // 2
        if space.reduction(at(taus[mid]), target) >= target.fraction:
            hi = mid
        else:
            lo = mid + 1
    return at(taus[lo])
