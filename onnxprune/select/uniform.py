"""How many channels each group loses: a uniform ratio, honouring round-to and a minimum width."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..analysis.model import ChannelAnalysis, Group
from .budget import Budget, parse_ratio, ratio_for


@dataclass(frozen=True)
class PrunePlan:
    """Which units go: ``removed`` is a bool per unit; ``widths`` maps group id -> (before, after)."""

    removed: np.ndarray
    widths: dict[int, tuple[int, int]]

    @property
    def removed_units(self) -> int:
        return int(self.removed.sum())


def kept_width(n: int, ratio: float, round_to: int = 1, min_width: int = 1,
               prunable: int | None = None) -> int:
    """Channels a group of ``n`` keeps when ``ratio`` of its ``prunable`` ones (default all)
    go, rounded up to a multiple of ``round_to``."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    prunable = n if prunable is None else prunable
    keep = n - int(math.floor(prunable * ratio + 1e-9))
    if round_to > 1:
        keep = int(math.ceil(keep / round_to) * round_to)
    return max(min(keep, n), min(min_width, n), 1)


def select_uniform(
    analysis: ChannelAnalysis,
    scores: np.ndarray,
    ratio: float | Budget,
    round_to: int = 1,
    min_width: int = 1,
) -> PrunePlan:
    """Remove ``ratio`` of every group's channels, lowest scores first. ``ratio`` may be a
    per-component budget (``{"*": 0.5, "pi": 0.0}``)."""
    budget = parse_ratio(ratio)
    removed = np.zeros(analysis.num_units, dtype=bool)
    widths: dict[int, tuple[int, int]] = {}
    for group in analysis.groups:
        r = ratio_for(budget, group.component)
        if group.frozen or r == 0.0:
            continue
        keep = kept_width(group.channels, r, round_to, min_width, group.prunable)
        drop = _lowest(group, analysis, scores, group.channels - keep)
        removed[drop] = True
    removed = analysis.enforce_links(removed)
    for group in analysis.groups:
        widths[group.id] = (group.channels, group.channels - int(removed[group.units].sum()))
    return PrunePlan(removed, widths)


def _lowest(group: Group, analysis: ChannelAnalysis, scores: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` lowest-scored prunable units of a group (ties broken by position)."""
    candidates = group.units[~analysis.unit_frozen[group.units]]
    count = min(count, candidates.size)
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(scores[candidates], kind="stable")
    return candidates[order[:count]]
