"""Soft coefficients, and which criterion ranks channels within a group under them: when no
criterion is given and calibration data is, each of ``SOFT_CRITERIA`` ranks, soft optimises
the per-group fractions on that ranking, and the application metric on the calibration data
keeps the best cut. The ranking decides as much as the fractions: on five digits autoencoders
and two classifiers (``benchmarks/autoencoder_family.py``) none of the three is best on all
seven, and the metric on the calibration data picked the one best on the test images on all
seven (test PSNR over uniform L2: +3.6 to +11.3 dB, where reconstruction alone, the default of
the other strategies, gained +2.6 on one of them)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...recover.soft_autograd import NotDifferentiable, soft_autograd
from ...scoring import score_units
from ...select.soft import soft_gradient, soft_grid
from ..base import Context

SOFT_CRITERIA = ("l2", "activation", "reconstruction")


def criterion_auto(ctx: Context) -> bool:
    """No criterion given, and calibration data to rank channels by."""
    score = next((p for p in ctx.planned if p.name == "score"), None)
    return (score is not None and score.criterion is None and ctx.calib is not None
            and (ctx.metric is None or not ctx.metric.on_model))


def soft(space, ev, target, info: dict, method: str, tolerance: float) -> np.ndarray:
    """The cut soft coefficients reach on ``space`` (``method``: gradient, falling back to
    finite differences where the graph is not differentiable, finite or grid)."""
    if method == "grid":
        removed, extra = soft_grid(space, ev, target, tolerance)
        extra["method"] = "grid"
    else:
        extra = None
        if method == "gradient":
            try:
                removed, extra = soft_autograd(space, ev, target, tolerance)
            except NotDifferentiable as why:
                info["autograd"] = str(why)
        if extra is None:
            removed, extra = soft_gradient(space, ev, target, tolerance)
            extra["method"] = "finite differences"
    info.update(coefficients=[float(c) for c in extra["coefficients"]],
                coefficient_groups=[int(g.gid) for g in space.groups],
                evaluations=extra["evaluations"], method=extra["method"])
    return removed


def soft_by_criteria(ctx: Context, analysis, scores: np.ndarray, info: dict, ev,
                     run: Callable[[object, dict], np.ndarray],
                     space_of: Callable[[np.ndarray], object]) -> np.ndarray:
    """The best of ``run`` (soft on a space) over the rankings of ``SOFT_CRITERIA`` by the
    metric on the calibration data (``scores``: the score pass's, for its criterion); the
    choice and every criterion's value go to ``info`` and ``ctx.criterion``."""
    trials, best = {}, None
    for criterion in SOFT_CRITERIA:
        ranks = scores if criterion == ctx.criterion else _scores(ctx, analysis, criterion)
        seen: dict = {}
        removed = run(space_of(ranks), seen)
        value = float(ev.evaluate(~removed))
        trials[criterion] = value
        if best is None or ev.metric.utility(value) > ev.metric.utility(best[0]):
            best = (value, criterion, removed, seen)
    _, criterion, removed, seen = best
    info.update(seen, criterion=criterion, criteria=trials)
    ctx.criterion = criterion
    return removed


def _scores(ctx: Context, analysis, criterion: str) -> np.ndarray:
    """The units' scores by ``criterion`` (with the score pass's reduction)."""
    score = next((p for p in ctx.planned if p.name == "score"), None)
    return score_units(
        criterion, ctx.graph, analysis, reduce=score.reduce if score else "mean",
        reference=ctx.skeleton() if criterion in ("activation", "apoz", "reconstruction")
        else None, calib=ctx.calib, bn_scales=ctx.bn_scales)
