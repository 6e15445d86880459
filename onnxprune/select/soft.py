"""Soft coefficients: one pruning coefficient per group (the fraction of its channels cut),
optimised so that the reduction hits the target within a tolerance while the application
metric is kept as high as possible.

Two optimisers, as compared in the application-specific pruning paper:

- ``grid``: coordinate search over a grid of coefficients, one group at a time (all of its
  grid values scored in one batched evaluation), with a penalty for missing the target;
- ``gradient``: a continuous relaxation. Each unit's gate is a sigmoid of its position in the
  group's removal order against ``c_g * n_g``, so the gated model gives the metric for soft
  masks; its gradient in the coefficients is estimated by finite differences (one batched
  evaluation per step) and followed with Adam, the reduction held by a quadratic penalty.

Both end with hard masks repaired to the tolerance by shifting all coefficients together.

A residual block (``--depth auto``) is a group of one unit: its coefficient ``c`` scales its
branch by ``1 - c`` in the relaxation (the gate of the block's branch), starts at 0 (kept), and
the block goes when ``c`` reaches one half.
"""

from __future__ import annotations

import numpy as np

from ..progress import task
from ..search.evaluate import Evaluator
from .common import Space, Target

GRID = tuple(np.round(np.arange(0.0, 0.95, 0.1), 2))


BLOCK_CUT = 0.5  # a block's coefficient from which it goes


def hard_cut(space: Space, c: np.ndarray) -> np.ndarray:
    """The unit mask of coefficients ``c`` (each group's fraction, clipped to [0, 1]; a block
    goes at ``BLOCK_CUT``)."""
    c = np.clip(np.asarray(c, float), 0, 1)
    blocks = space.block_groups
    c = np.where(blocks, (c >= BLOCK_CUT).astype(float), c) if blocks.any() else c
    return space.mask(space.counts_for_fractions(c))


def soft_gates(space: Space, c, positions, gate):
    """Every unit's gate for coefficients ``c`` (numbers or torch scalars): a channel group's
    units by ``gate(position - c * size)`` (a sigmoid, open for the last units of the removal
    order), a block's branch by ``1 - c``; ``positions``: each group's unit positions + 0.5."""
    for g, pos, ci, block in zip(space.groups, positions, c, space.block_groups, strict=True):
        # a block: one gate, its branch scaled by 1 - c (shaped as its one position)
        yield g.order, (1 - ci) + 0 * pos if block else gate(pos - ci * g.order.size)


def repair_to_target(space: Space, c: np.ndarray, target: Target, tol: float) -> np.ndarray:
    """Shift every channel group's coefficient by one common offset until the reduction is
    within ``tol`` (blocks stay as their coefficients decide: kept or removed)."""
    c = np.clip(np.asarray(c, float), 0, 1)
    moves = ~space.block_groups
    c[~moves] = (c[~moves] >= BLOCK_CUT).astype(float)

    def shifted(shift: float) -> np.ndarray:
        return np.where(moves, np.clip(c + shift, 0, 1), c)

    def red(shift: float) -> float:
        return space.reduction(hard_cut(space, shifted(shift)), target)

    if abs(red(0.0) - target.fraction) <= tol:
        return c
    lo, hi = -1.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if red(mid) < target.fraction else (lo, mid)
    best = min((lo, hi), key=lambda s: abs(red(s) - target.fraction))
    return shifted(best)


UNSETTLED = (0.25, 0.75)  # block coefficients near the cut, checked on the hard model
SETTLE_AT_MOST = 4


def settle(space: Space, ev: Evaluator, c: np.ndarray, target: Target, tol: float
           ) -> np.ndarray:
    """The coefficients repaired to the target, with each block whose coefficient ended near
    the cut (``UNSETTLED``, nearest first, at most ``SETTLE_AT_MOST``) removed or kept as the
    metric of the hard cut prefers (the channels repaired around it each time): a relaxation's
    branch scaled by one half says little about the model without it."""
    best = repair_to_target(space, c, target, tol)
    near = [i for i in np.flatnonzero(space.block_groups) if UNSETTLED[0] <= c[i] < UNSETTLED[1]]
    near = sorted(near, key=lambda i: abs(c[i] - BLOCK_CUT))[:SETTLE_AT_MOST]
    if not near:
        return best
    best_util = ev.metric.utility(ev.evaluate(~hard_cut(space, best)))
    for i in near:
        trial = np.asarray(c, float).copy()
        trial[space.block_groups] = best[space.block_groups]
        trial[i] = 0.0 if best[i] >= BLOCK_CUT else 1.0
        trial = repair_to_target(space, trial, target, tol)
        util = ev.metric.utility(ev.evaluate(~hard_cut(space, trial)))
        if util > best_util:
            best, best_util = trial, util
    return best


def shared_start(space: Space, target: Target) -> np.ndarray:
    """Coefficients that start every group at the one fraction meeting ``target``."""
    from .common import bisect_shared_fraction

    c = np.full(len(space.groups), bisect_shared_fraction(space, target))
    c[space.block_groups] = 0.0  # blocks start kept; the search decides whether they go
    return c


def _rebalance(space: Space, c: np.ndarray, fixed: int, target: Target) -> np.ndarray:
    """Shift every coefficient but ``fixed`` by one offset so the reduction meets the target."""
    others = np.arange(len(c)) != fixed

    def red(shift: float) -> float:
        t = c.copy()
        t[others] = np.clip(c[others] + shift, 0, 1)
        return space.reduction(hard_cut(space, t), target)

    lo, hi = -1.0, 1.0
    for _ in range(24):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if red(mid) < target.fraction else (lo, mid)
    out = c.copy()
    out[others] = np.clip(c[others] + hi, 0, 1)
    return out


def soft_grid(space: Space, ev: Evaluator, target: Target, tol: float = 0.02,
              sweeps: int = 2) -> tuple[np.ndarray, dict]:
    """Coordinate search: each group's coefficient over the grid, the others rebalanced so the
    reduction stays on target; the best measured metric wins each coordinate."""
    c = shared_start(space, target)
    best = ev.metric.utility(ev.evaluate(~hard_cut(space, c)))
    with task("soft coefficients (grid)", sweeps * len(space.groups)) as advance:
        for _ in range(sweeps):
            for i in range(len(space.groups)):
                trials = []
                for v in GRID:
                    t = c.copy()
                    t[i] = v
                    t = _rebalance(space, t, i, target)
                    if space.reduction(hard_cut(space, t), target) >= target.fraction - tol:
                        trials.append(t)
                if trials:
                    masks = np.array([hard_cut(space, t) for t in trials])
                    utils = [ev.metric.utility(u) for u in ev.evaluate_many(~masks)]
                    j = int(np.argmax(utils))
                    if utils[j] > best:
                        best, c = utils[j], trials[j]
                advance()
    c = settle(space, ev, c, target, tol)
    return hard_cut(space, c), {"coefficients": c, "evaluations": ev.evals}


def _soft_gates(space: Space, c: np.ndarray, temperature: float) -> np.ndarray:
    gates = np.ones(space.analysis.num_units, np.float32)
    positions = [np.arange(g.order.size) + 0.5 for g in space.groups]
    for units, value in soft_gates(space, c, positions,
                                   lambda x: 1.0 / (1.0 + np.exp(-x / temperature))):
        gates[units] = value
    return gates


def target_shares(space: Space, target: Target) -> np.ndarray:
    """Each group's share of what the target counts (params, MACs or channels): the
    reduction of coefficients ``c`` is about ``shares @ c``."""
    kind = target.kind if target.kind in ("macs", "latency") else "params"
    weights = space.cost.unit_weights(kind)
    per_group = np.array([weights[g.order].sum() for g in space.groups])
    total = {"params": space.cost.params_total, "macs": space.cost.macs_total,
             "latency": space.cost.latency.whole_ms if kind == "latency" else 0}[kind]
    if target.kind == "channels":
        per_group = np.array([g.order.size for g in space.groups], float)
        total = per_group.sum()
    return per_group / max(total, 1)


def soft_gradient(space: Space, ev: Evaluator, target: Target, tol: float = 0.02,
                  steps: int = 60, lr: float = 0.05, temperature: float = 1.0,
                  delta: float = 0.05) -> tuple[np.ndarray, dict]:
    n = len(space.groups)
    c = shared_start(space, target)
    per_group = target_shares(space, target)
    scale = max(abs(ev.metric.utility(ev.base)), 1.0)
    m, v = np.zeros(n), np.zeros(n)
    history = []
    with task("soft coefficients (gradient)", steps) as advance:
        for step in range(1, steps + 1):
            mu = 10.0 * (1 + step / 10)  # the penalty stiffens as the search goes on
            probes = [c] + [np.clip(c + delta * np.eye(n)[i], 0, 1) for i in range(n)]
            utils = np.array([ev.metric.utility(u) for u in ev.evaluate_many(
                np.array([_soft_gates(space, p, temperature) for p in probes]))]) / scale
            grad_util = (utils[1:] - utils[0]) / delta
            miss = float(per_group @ c - target.fraction)
            grad = -grad_util + 2 * mu * miss * per_group  # minimise -utility + mu * miss^2
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad**2
            c = np.clip(c - lr * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8),
                        0, 1)
            history.append(float(utils[0] * scale))
            advance()
    c = settle(space, ev, c, target, tol)
    return hard_cut(space, c), {"coefficients": c, "evaluations": ev.evals, "history": history}
