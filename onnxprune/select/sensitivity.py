"""Sensitivity: per-group curves of the application metric, then allocation.

Each group is cut alone to a range of fractions (``LEVELS``) and the metric is measured: its
curve. A path then deepens, step by step, the cut that costs the least metric per parameter
(or MAC) saved. For a target: the first ``GREEDY_SHARE`` of the reduction by the curves alone,
then every step measured on the combined mask for the groups whose curves promise the
cheapest next level (``SHORTLIST`` of them), the curves measured only at the levels the path
asks about (``LazyCurves``); the shortest prefix reaching the target is taken. For a
constraint ("psnr>=20"): whole curves, the greedy path, and the longest prefix whose
*measured* metric still satisfies the constraint (bisection on the path, real evaluations).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..progress import clock, task
from ..search.evaluate import Evaluator
from .common import Space, Target

LEVELS = tuple(np.round(np.arange(0.1, 1.0, 0.1), 2))
# groups measured per step of the path: the digits autoencoder and classifier choose the same
# cuts measuring 2 as measuring all, and the autoencoder's search takes 40% less time
SHORTLIST = 2
# the share of a target's reduction taken greedily from the groups' own curves before every
# step is measured on the combined mask (the first, cheapest cuts barely interact)
GREEDY_SHARE = 0.5
# a batch of curve points is measured in this many parts, each said when done
CHUNKS = 8


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
        for i in range(len(space.groups)):
            ks = _levels(space, i, levels)
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


def _levels(space: Space, i: int, levels) -> list[int]:
    """The counts group ``i``'s curve measures: the legal counts at ``levels`` of its units
    (a residual block, one unit: removed whole)."""
    g = space.groups[i]
    return sorted({space.legal(i, f * g.order.size) for f in levels} - {0}) or [
        int(g.counts[-1])]


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


class LazyCurves:
    """Sensitivity curves measured only where a path asks: level ``j`` of group ``i`` cut
    alone, each once (a path needs a group's next level, never the whole curve). Unmeasured
    points are NaN."""

    def __init__(self, space: Space, ev: Evaluator, levels=LEVELS):
        self.space, self.ev = space, ev
        base = ev.metric.utility(ev.base)
        self.curves = []
        for i in range(len(space.groups)):
            ks = _levels(space, i, levels)
            utility = np.full(len(ks) + 1, np.nan)
            utility[0] = base
            self.curves.append(Curve(np.array([0] + ks), utility))

    def pending(self, points: list[tuple[int, int]]) -> int:
        """How many of the points (group, level) are not measured yet."""
        return sum(1 for i, j in points if np.isnan(self.curves[i].utility[j]))

    def need(self, points: list[tuple[int, int]],
             said: Callable[[int, int], None] | None = None) -> None:
        """Measure the points (group, level) not measured yet, in batches of a
        ``CHUNKS``-th of them; ``said(done, total)`` after each."""
        todo = [(i, j) for i, j in points if np.isnan(self.curves[i].utility[j])]
        size = max(1, -(-len(todo) // CHUNKS))
        for at in range(0, len(todo), size):
            part = todo[at:at + size]
            masks = []
            for i, j in part:
                counts = [0] * len(self.curves)
                counts[i] = int(self.curves[i].counts[j])
                masks.append(self.space.mask(counts))
            for (i, j), v in zip(part, self.ev.evaluate_many(~np.array(masks)), strict=True):
                self.curves[i].utility[j] = self.ev.metric.utility(v)
            if said is not None:
                said(at + len(part), len(todo))

    @property
    def measured(self) -> int:
        return int(sum((~np.isnan(c.utility[1:])).sum() for c in self.curves))


def measured_path(space: Space, ev: Evaluator, curves: LazyCurves, unit_cost: np.ndarray,
                  target: Target, shortlist: int | None = None, share: float = 0.0
                  ) -> list[list[int]]:
    """States of per-group level counts, from nothing removed until ``target`` is reached.

    Until ``share`` of the target's reduction, each step deepens the group whose own curve
    promises the least metric lost per cost saved (the first cuts, where groups barely
    interact). Then every step is chosen by evaluating each candidate group's next level on
    the *combined* mask (one batched evaluation per step), so interactions between groups
    count; with ``shortlist``, only that many groups are measured per step: those whose own
    curves promise the cheapest next level. Curve points are measured as the steps need
    them."""
    def reduction(counts) -> float:
        return space.reduction(space.mask(counts), target)

    n = len(curves.curves)
    level = [0] * n
    path = [[0] * n]
    current = None  # the measured utility of the current state (None: not measured)
    with task("sensitivity", None) as advance:
        while True:
            cs = curves.curves
            options = [i for i, c in enumerate(cs) if level[i] + 1 < len(c.counts)]
            if not options:
                return path
            wanted = [(i, level[i] + 1) for i in options]
            todo = curves.pending(wanted)
            if todo > 1:  # the first batch is every group's first level: say so while it runs
                advance(0, status=f"measuring {todo} curve points")
            curves.need(wanted, _curve_points(advance) if todo > 1 else None)
            if todo > 1:
                advance(0, status="")
            ranked = sorted(options, key=lambda i: _predicted(space, cs[i], level[i], i,
                                                              unit_cost))
            if reduction(path[-1]) < share * target.fraction:
                level[ranked[0]] += 1
            else:
                if current is None and len(path) == 1:  # nothing cut yet
                    current = ev.metric.utility(ev.base)
                elif current is None:  # where the greedy prefix ended: say how far to go
                    advance(0, total=_expected(len(path) - 1, share))
                    current = ev.metric.utility(ev.evaluate(~space.mask(path[-1])))
                if shortlist is not None:
                    ranked = ranked[:shortlist]
                masks, saved = [], []
                now = reduction(path[-1])
                for i in ranked:
                    counts = [int(c.counts[j]) for c, j in zip(cs, level, strict=True)]
                    counts[i] = int(cs[i].counts[level[i] + 1])
                    masks.append(space.mask(counts))
                    order = space.groups[i].order
                    first = int(cs[i].counts[level[i]])
                    cut = unit_cost[order[first:counts[i]]].sum()
                    saved.append(cut * _within(target.fraction - now, space.reduction(
                        masks[-1], target) - now) if _whole(space, i, first, counts[i]) else cut)
                utils = np.array([ev.metric.utility(v)
                                  for v in ev.evaluate_many(~np.array(masks))])
                loss = np.maximum(current - utils, 0.0) / np.maximum(np.array(saved), 1e-12)
                k = int(np.argmin(loss))
                level[ranked[k]] += 1
                current = utils[k]
            path.append([int(c.counts[j]) for c, j in zip(cs, level, strict=True)])
            advance()
            if reduction(path[-1]) >= target.fraction:
                return path


def _curve_points(advance) -> Callable[[int, int], None]:
    """Says how far a batch of curve points has gone, with the time it has left (the first
    batch, every group's first level, is minutes on a large model: ddddocr's detector 80 s)."""
    start = time.perf_counter()

    def said(done: int, total: int) -> None:
        if done < total:
            left = (time.perf_counter() - start) / done * (total - done)
            advance(0, status=f"curve points {done}/{total}, ETA {clock(left)}")
    return said


def _moved(before: list[int], after: list[int]) -> int:
    """The group a step of a path deepened."""
    return next(j for j, (a, b) in enumerate(zip(before, after, strict=True)) if a != b)


def _whole(space: Space, i: int, first: int, last: int) -> bool:
    """Whether group ``i``'s step from ``first`` to ``last`` units cannot be taken in part
    (no legal count between: a residual block's one unit)."""
    return not any(first < k < last for k in space.groups[i].counts)


def _within(need: float, step: float) -> float:
    """The share of a step's saving that counts toward the target when the step cannot be
    taken in part (the last step of a path is refined to the channels the target needs, but a
    residual block goes whole): all of it up to what the target still needs, past it none. A
    block that saved more than the rest of the target looked cheap per parameter and
    overshot it (the digits classifier at 31%: 42% removed, accuracy 0.72 before recovery
    where channels alone kept 0.91)."""
    if step <= need or step <= 0:
        return 1.0
    return max(need, 0.0) / step


def _expected(steps: int, share: float) -> int:
    """All the steps a path will likely take, ``steps`` having reached ``share`` of its
    target's reduction (reductions grow about evenly along a path)."""
    return int(np.ceil(steps / max(share, 1e-3)))


def _steps_to(path: list[list[int]], reached) -> int:
    """The first step of ``path`` that ``reached`` accepts (its last when none does; the
    reduction grows along a path): the prefix a target takes."""
    lo, hi = 0, len(path) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if reached(path[mid]):
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
    unit_cost = space.cost.unit_weights(cost_kind)
    def reached(counts) -> bool:
        return space.reduction(space.mask(counts), target) >= target.fraction

    if constraint is None and target is not None:
        lazy = LazyCurves(space, ev)
        steps = sum(len(c.counts) - 1 for c in lazy.curves)
        # measure the SHORTLIST groups whose own curves promise the cheapest next steps
        # (fewer with many steps)
        shortlist = SHORTLIST if steps * len(lazy.curves) <= max_evals else max(
            2, min(SHORTLIST, max_evals // max(steps, 1)))
        path = measured_path(space, ev, lazy, unit_cost, target, shortlist, GREEDY_SHARE)
        lo = _steps_to(path, reached)  # the shortest prefix reaching the target
        counts = _given_back(space, path, lo, target, ev,
                             _refine_last_step(space, path, lo, target))
        return space.mask(counts), {
            "curves": lazy.curves, "steps": lo, "curve_points": lazy.measured}
    curves = sensitivity_curves(space, ev)
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
    lo = _steps_to(path, reached)
    return space.mask(_refine_last_step(space, path, lo, target)), {"curves": curves, "steps": lo}


def _refine_last_step(space: Space, path: list[list[int]], step: int, target: Target) -> list[int]:
    """The last step deepened one group by a whole level; take only as many of its channels
    as the target needs."""
    if step == 0:
        return path[0]
    before, after = path[step - 1], path[step]
    i = _moved(before, after)
    ks = [k for k in space.groups[i].counts if before[i] < k <= after[i]]
    for k in ks:
        counts = list(before)
        counts[i] = int(k)
        if space.reduction(space.mask(counts), target) >= target.fraction:
            return counts
    return after


def _given_back(space: Space, path: list[list[int]], step: int, target: Target, ev: Evaluator,
                counts: list[int]) -> list[int]:
    """A last step that went past the target whole (a residual block) leaves room: the
    channels of earlier steps go back, the latest first (as many of each as the target
    allows), and the metric keeps the cut that scores better. Without it the digits
    classifier's search at 31% removed a block of 20% of its parameters last: 42% removed."""
    if step == 0:
        return counts
    last = _moved(path[step - 1], path[step])
    if not _whole(space, last, path[step - 1][last], path[step][last]):
        return counts  # refined to the channels the target needs
    back = list(counts)
    for s in range(step - 1, 0, -1):
        i = _moved(path[s - 1], path[s])
        if back[i] != path[s][i]:  # a later step of this group stayed
            continue
        for k in space.groups[i].counts:  # the fewest of the step's units that still reach
            if path[s - 1][i] <= k <= path[s][i]:
                trial = list(back)
                trial[i] = int(k)
                if space.reduction(space.mask(trial), target) >= target.fraction:
                    back = trial
                    break
    if back == counts:
        return counts
    utility = [ev.metric.utility(v) for v in ev.evaluate_many(
        ~np.array([space.mask(back), space.mask(counts)]))]
    return back if utility[0] >= utility[1] else counts

