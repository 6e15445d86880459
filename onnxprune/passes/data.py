"""Calibration data and the application metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import load_npz
from ..errors import UsageError
from ..evaluate import Evaluator
from ..graph import export_model
from ..pipeline import Context, Pass, PassResult
from ..quality import get_metric
from ..verify import random_feeds


class Calibrate(Pass):
    name = "calibrate"
    description = "Calibration batch: an .npz keyed by input name (+ labels), or N random samples."

    def __init__(self, path: str | Path | None = None, random: int | None = None,
                 arrays: dict[str, np.ndarray] | None = None, seed: int = 0):
        if sum(x is not None for x in (path, random, arrays)) != 1:
            raise UsageError("give exactly one calibration source: --calib FILE or --calib-random N")
        self.path, self.random, self.arrays, self.seed = path, random, arrays, seed

    def run(self, ctx: Context) -> PassResult:
        if self.arrays is not None:
            ctx.calib = {k: np.asarray(v) for k, v in self.arrays.items()}
        elif self.path is not None:
            try:
                ctx.calib = load_npz(self.path)
            except (ValueError, OSError) as err:
                raise UsageError(f"--calib {self.path}: {err}") from None
        else:
            if self.random < 1:
                raise UsageError("--calib-random needs a positive number of samples")
            model = export_model(ctx.require("graph", self.name))
            ctx.calib = random_feeds(model, seed=self.seed, batch=self.random)
        _check(ctx)
        n = len(next(iter(ctx.calib.values())))
        return PassResult(False, {"samples": n, "arrays": sorted(ctx.calib)})


def _check(ctx: Context) -> None:
    graph = ctx.graph
    for t in graph.inputs:
        if t.name not in ctx.calib:
            raise UsageError(f"calibration data has no array for model input {t.name!r} "
                             f"(it has {', '.join(sorted(ctx.calib))})")
        have = ctx.calib[t.name].shape
        want = t.shape or []
        if len(have) != len(want) or any(
            isinstance(w, int) and w != h for w, h in zip(want[1:], have[1:], strict=True)
        ):
            raise UsageError(f"calibration array {t.name!r} has shape {list(have)}; the model "
                             f"expects {list(want)} (batch first)")


class UseMetric(Pass):
    name = "metric"
    description = "The application metric (psnr, mse, accuracy, cosine, kl, module:function)."

    def __init__(self, metric: str = "cosine"):
        self.metric = get_metric(metric)

    def run(self, ctx: Context) -> PassResult:
        ctx.metric = self.metric
        return PassResult(False, {"metric": self.metric.name})


def evaluator(ctx: Context, by: str) -> Evaluator:
    """The mask-oracle evaluator of the current graph, built once per analysis."""
    if ctx.evaluator is None or ctx.evaluator.analysis is not ctx.analysis:
        metric = ctx.metric or get_metric("cosine")
        if ctx.calib is None and not metric.on_model:
            raise UsageError(f"{by} needs calibration data: --calib FILE.npz or --calib-random N")
        if ctx.evaluator is not None:
            ctx.evaluator.close()
        ctx.evaluator = Evaluator(export_model(ctx.graph), ctx.analysis, ctx.calib, metric)
        if ctx.executor[0] != "local":
            ctx.evaluator.use(*ctx.executor)
    return ctx.evaluator


class MeasureQuality(Pass):
    name = "quality"
    description = "The application metric before and after the selected cut (on the oracle)."

    def run(self, ctx: Context) -> PassResult:
        plan = ctx.require("plan", self.name)
        ev = evaluator(ctx, "measuring quality")
        after = ev.evaluate(~plan.removed)
        ctx.quality = {"metric": ev.metric.name, "before": ev.base, "after": after,
                       "samples": ev.n}
        return PassResult(False, ctx.quality)
