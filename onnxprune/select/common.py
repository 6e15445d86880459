"""What every selection strategy shares: per-group removal orders, the legal removal counts
(min width, round-to, per-component caps), masks from counts, and reduction targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..analysis.model import ChannelAnalysis
from ..errors import UsageError
from .budget import Budget, ratio_for
from .cost import CostModel

TARGETS = ("params", "macs", "channels", "latency")


@dataclass(frozen=True)
class Target:
    """Remove ``fraction`` of the model's parameters, MACs, or prunable channels."""

    kind: str
    fraction: float

    def __post_init__(self):
        if self.kind not in TARGETS:
            raise UsageError(f"target must be one of {', '.join(TARGETS)}")
        if not 0.0 <= self.fraction < 1.0:
            raise UsageError(f"target fraction must be in [0, 1), got {self.fraction}")


@dataclass
class GroupSpace:
    """One prunable group: its units lowest score first, and how many may go."""

    gid: int
    order: np.ndarray  # prunable units, lowest score first
    counts: np.ndarray  # legal numbers of units to remove, ascending, starting at 0


class Space:
    """The search space of a strategy: legal per-group counts, masks and their cost."""

    def __init__(self, analysis: ChannelAnalysis, scores: np.ndarray, cost: CostModel,
                 budget: Budget, round_to: int = 1, min_width: int = 1,
                 blocks: Sequence[int] = ()):
        """``blocks``: units of residual blocks, each a group of one unit the search may
        remove whole (0 or 1), beside the channel groups."""
        self.analysis, self.cost = analysis, cost
        self.groups: list[GroupSpace] = []
        for g in analysis.groups:
            cap = ratio_for(budget, g.component)
            free = g.units[~analysis.unit_frozen[g.units]]
            if g.frozen or cap <= 0.0 or free.size == 0:
                continue
            order = free[np.argsort(scores[free], kind="stable")]
            limit = min(free.size, int(np.floor(cap * free.size + 1e-9)),
                        g.channels - max(min_width, 1))
            ks = [k for k in range(0, max(limit, 0) + 1)
                  if k == 0 or (g.channels - k) % round_to == 0]
            if len(ks) > 1:
                self.groups.append(GroupSpace(g.id, order, np.array(ks)))
        for i, unit in enumerate(blocks):  # ids -1, -2, ... (not channel groups)
            self.groups.append(GroupSpace(-1 - i, np.array([unit]), np.array([0, 1])))

    @property
    def block_groups(self) -> np.ndarray:
        """Which groups are residual blocks (one unit each, removed whole or kept)."""
        return np.array([g.gid < 0 for g in self.groups], bool)

    def mask(self, counts) -> np.ndarray:
        """Removed-units mask for ``counts[i]`` units removed from group ``i`` (then links)."""
        removed = np.zeros(self.analysis.num_units, dtype=bool)
        for gs_, k in zip(self.groups, counts, strict=True):
            removed[gs_.order[: int(k)]] = True
        return self.analysis.enforce_links(removed)

    def legal(self, i: int, k: float) -> int:
        """The largest legal count not above ``k`` for group ``i``."""
        ks = self.groups[i].counts
        return int(ks[max(0, np.searchsorted(ks, k, side="right") - 1)])

    def counts_for_fractions(self, fractions) -> list[int]:
        return [self.legal(i, f * g.order.size) for i, (g, f) in enumerate(zip(self.groups, fractions, strict=True))]

    def reduction(self, removed: np.ndarray, target: Target) -> float:
        if target.kind == "channels":
            total = sum(g.order.size for g in self.groups) or 1
            return float(sum(removed[g.order].sum() for g in self.groups)) / total
        return self.cost.reduction(removed, target.kind)


def bisect_shared_fraction(space: Space, target: Target, iters: int = 40) -> float:
    """The smallest common removal fraction for every group that reaches ``target``."""
    lo, hi = 0.0, 1.0
    if space.reduction(space.mask(space.counts_for_fractions([hi] * len(space.groups))), target) \
            < target.fraction:
        return hi
    for _ in range(iters):
        mid = (lo + hi) / 2
        red = space.reduction(space.mask(space.counts_for_fractions([mid] * len(space.groups))),
                              target)
        lo, hi = (mid, hi) if red < target.fraction else (lo, mid)
    return hi
