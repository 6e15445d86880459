"""Sensitivity: per-group curves of the application metric, then allocation.

Each group is cut alone to a range of fractions and the metric is measured (one batched
evaluation per group). A greedy path then deepens, step by step, the cut that costs the least
metric per parameter (or MAC) saved, measured on the combined mask for the groups whose curves
promise the cheapest next level (``SHORTLIST`` of them). For a target the shortest prefix of
the path that reaches it is taken; for a constraint ("psnr>=20") the longest prefix whose
*measured* metric still satisfies it (bisection on the path, real evaluations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..progress import task
from ..search.evaluate import Evaluator
from .common import Space, Target

LEVELS = tuple(np.round(np.arange(0.1, 1.0, 0.1), 2))
# groups measured per step of the path: the digits autoencoder and classifier choose the same
# cuts measuring 2 as measuring all, and the autoencoder's search takes 40% less time
SHORTLIST = 2


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str  # ">=" or "<="
    bound: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        from ..errors import UsageError

        for op in (">=", "<="):
            if op in text:
                name, _, value = text.partition(op)
                try:
                    return cls(name.strip(), op, float(value))
                except ValueError:
                    break
        raise UsageError(f"{text!r}: expected METRIC>=VALUE or METRIC<=VALUE")


@dataclass(frozen=True)
class Curve:
    counts: np.ndarray  # removal counts, starting with 0
    utility: np.ndarray  # metric utility (higher is better) at each count


def sensitivity_curves(space: Space, ev: Evaluator, levels=LEVELS) -> list[Curve]:
    base = ev.metric.utility(ev.base)
    curves = []
    with task("sensitivity curves", len(space.groups)) as advance:
        for i, g in enumerate(space.groups):
            ks = sorted({space.legal(i, f * g.order.size) for f in levels} - {0})
            counts = [0] * len(space.groups)
            masks = []
            for k in ks:
                counts[i] = k
                masks.append(space.mask(counts))
            values = ev.evaluate_many(~np.array(masks)) if masks else np.zeros(0)
            util = [base] + [ev.metric.utility(v) for v in values]
            curves.append(Curve(np.array([0] + ks), np.array(util)))
            advance()
    return curves


def greedy_path(space: Space, curves: list[Curve], unit_cost: np.ndarray) -> list[list[int]]:
    """States of per-group level indices, from nothing removed to everything allowed."""
    level = [0] * len(curves)
    path = [[0] * len(curves)]
    while True:
        best, best_ratio = None, np.inf
        for i, c in enumerate(curves):
            j = level[i]
            if j + 1 >= len(c.counts):
                continue
            order = space.groups[i].order
            saved = unit_cost[order[c.counts[j]:c.counts[j + 1]]].sum()
            loss = max(c.utility[j] - c.utility[j + 1], 0.0)
            ratio = loss / max(saved, 1e-12)
            if ratio < best_ratio:
                best, best_ratio = i, ratio
        if best is None:
            return path
        level[best] += 1
        path.append([int(c.counts[j]) for c, j in zip(curves, level, strict=True)])


def measured_path(space: Space, ev: Evaluator, curves: list[Curve], unit_cost: np.ndarray,
                  done, shortlist: int | None = None, expect: int | None = None
                  ) -> list[list[int]]:
    """Like :func:`greedy_path`, but every step is chosen by evaluating each group's next
    level on the *combined* mask (one batched evaluation per step), so interactions between
    groups count. With ``shortlist``, only that many groups are measured per step: those
    whose own curves promise the cheapest next level. Stops when ``done(counts, utility)``
    says so. ``expect``: the steps it will likely take (the progress total; default: every
    level of every group)."""
    level = [0] * len(curves)
    path = [[0] * len(curves)]
    current = ev.metric.utility(ev.base)
    total = expect or sum(len(c.counts) - 1 for c in curves)
    with task("sensitivity (measured)", total) as advance:
        while True:
            options = [i for i, c in enumerate(curves) if level[i] + 1 < len(c.counts)]
            if not options:
                return path
            if shortlist is not None and len(options) > shortlist:
                options = sorted(options, key=lambda i: _predicted(
                    space, curves[i], level[i], i, unit_cost))[:shortlist]
            masks, saved = [], []
            for i in options:
                counts = [int(c.counts[j]) for c, j in zip(curves, level, strict=True)]
                counts[i] = int(curves[i].counts[level[i] + 1])
                masks.append(space.mask(counts))
                order = space.groups[i].order
                saved.append(unit_cost[order[curves[i].counts[level[i]]:counts[i]]].sum())
            utils = np.array([ev.metric.utility(v) for v in ev.evaluate_many(~np.array(masks))])
            loss = np.maximum(current - utils, 0.0) / np.maximum(np.array(saved), 1e-12)
            k = int(np.argmin(loss))
            level[options[k]] += 1
            current = utils[k]
            path.append([int(c.counts[j]) for c, j in zip(curves, level, strict=True)])
            advance()
            if done(path[-1], current):
                return path


def _steps_to(path: list[list[int]], reached) -> int:
    """The first step of ``path`` that ``reached`` accepts (its last when none does; the
    reduction grows along a path): the prefix a target takes, and on the greedy path an
    estimate of how far the measured path will go (its progress total)."""
    lo, hi = 0, len(path) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if reached(path[mid], None):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _predicted(space: Space, c: Curve, j: int, i: int, unit_cost: np.ndarray) -> float:
    """Metric lost per cost saved by the next level of group ``i`` alone (its curve)."""
    order = space.groups[i].order
    saved = unit_cost[order[c.counts[j]:c.counts[j + 1]]].sum()
    return max(c.utility[j] - c.utility[j + 1], 0.0) / max(saved, 1e-12)


def select_sensitivity(space: Space, ev: Evaluator, target: Target | None = None,
                       constraint: Constraint | None = None, constraint_ev: Evaluator | None = None,
                       cost_kind: str = "params", max_evals: int = 3000) -> tuple[np.ndarray, dict]:
    curves = sensitivity_curves(space, ev)
    steps = sum(len(c.counts) - 1 for c in curves)
    unit_cost = space.cost.unit_weights(cost_kind)
    if target is not None:
        def reached(counts, _=None) -> bool:
            return space.reduction(space.mask(counts), target) >= target.fraction

    if constraint is None and target is not None and steps:
        # measure every step on the combined mask (interactions count), for the SHORTLIST
        # groups whose own curves promise the cheapest next steps (fewer with many steps)
        shortlist = SHORTLIST if steps * len(curves) <= max_evals else max(
            2, min(SHORTLIST, max_evals // steps))
        path = measured_path(space, ev, curves, unit_cost, reached, shortlist,
                             expect=max(1, _steps_to(greedy_path(space, curves, unit_cost),
                                                     reached)))
    else:
        path = greedy_path(space, curves, unit_cost)
    if constraint is not None:
        cev = constraint_ev or ev

        def ok(step: int) -> bool:
            value = cev.evaluate(~space.mask(path[step]))
            return cev.metric.satisfies(value, constraint.op, constraint.bound)

        lo, hi = 0, len(path) - 1
        if not ok(0):
            return space.mask(path[0]), {"curves": curves, "steps": 0, "satisfied": False,
                                         "unpruned": cev.base}
        with task("constraint search", int(np.ceil(np.log2(len(path) + 1)))) as advance:
            while lo < hi:  # the largest step that satisfies the constraint
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
                advance()
        return space.mask(path[lo]), {"curves": curves, "steps": lo, "satisfied": True}
    assert target is not None
    lo = _steps_to(path, reached)  # the shortest prefix reaching the target
    return space.mask(_refine_last_step(space, path, lo, target)), {"curves": curves, "steps": lo}


def _refine_last_step(space: Space, path: list[list[int]], step: int, target: Target) -> list[int]:
    """The last step deepened one group by a whole level; take only as many of its channels
    as the target needs."""
    if step == 0:
        return path[0]
    before, after = path[step - 1], path[step]
    i = next(j for j, (a, b) in enumerate(zip(before, after, strict=True)) if a != b)
    ks = [k for k in space.groups[i].counts if before[i] < k <= after[i]]
    for k in ks:
        counts = list(before)
        counts[i] = int(k)
        if space.reduction(space.mask(counts), target) >= target.fraction:
            return counts
    return after
