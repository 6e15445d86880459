"""Pruning passes: score channels, choose how many each group loses, remove them."""

from __future__ import annotations

import numpy as np

from ..errors import ConstraintError, UsageError, warn
from ..ir.graph import export_model
from ..rewrite.remove import remove_units
from ..scoring import CRITERIA, REDUCTIONS, normalize, score_units
from ..search.quality import get_metric
from ..select.budget import check_names, parse_ratio
from ..select.common import Space, Target, bisect_shared_fraction
from ..select.cost import CostModel
from ..select.global_threshold import select_global
from ..select.latency import probe_round_to
from ..select.sensitivity import Constraint, select_sensitivity
from ..select.soft import soft_gradient, soft_grid
from ..select.uniform import PrunePlan, select_uniform
from .core import Context, Pass, PassResult
from .data import evaluator

STRATEGIES = ("uniform", "global", "sensitivity", "soft")
SOFT_METHODS = ("gradient", "grid")


class ScoreChannels(Pass):
    name = "score"
    description = "Importance per channel: " + ", ".join(CRITERIA) + "."
    requires = ("analysis",)
    provides = ("scores",)

    def __init__(self, criterion: str = "l2", reduce: str = "mean"):
        if criterion not in CRITERIA:
            raise UsageError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
        if reduce not in REDUCTIONS:
            raise UsageError(f"unknown reduction {reduce!r}; choose one of {', '.join(REDUCTIONS)}")
        self.criterion, self.reduce = criterion, reduce

    def needs(self) -> set[str]:
        extra = {"activation": {"calib"}, "apoz": {"calib"}, "taylor": {"eval_data"},
                 "metric": {"eval_data"}}.get(self.criterion, set())
        return set(self.requires) | extra

    def run(self, ctx: Context) -> PassResult:
        analysis = ctx.require("analysis", self.name)
        ev = evaluator(ctx, f"--criterion {self.criterion}") if self.criterion in (
            "taylor", "metric") else None
        if self.criterion in ("activation", "apoz") and ctx.calib is None:
            raise UsageError(f"--criterion {self.criterion} needs calibration data: "
                             "--calib FILE.npz or --calib-random N")
        ctx.scores = score_units(
            self.criterion, ctx.graph, analysis, reduce=self.reduce, evaluator=ev,
            reference=export_model(ctx.graph) if self.criterion in ("activation", "apoz") else None,
            calib=ctx.calib, bn_scales=ctx.bn_scales,
        )
        return PassResult(False, {"criterion": self.criterion})


class SelectChannels(Pass):
    name = "select"
    description = "How many channels each group loses: " + ", ".join(STRATEGIES) + "."
    requires = ("analysis",)
    provides = ("plan",)

    def __init__(self, strategy: str = "uniform", ratio: float | str | dict = 0.5, *,
                 target_params: float | None = None, target_macs: float | None = None,
                 constraint: str | None = None, tolerance: float = 0.02,
                 soft_method: str = "gradient", round_to: int | str = 1, min_width: int = 1,
                 max_ratio: float = 0.9, normalize: str = "mean",
                 latency_provider: str = "CPUExecutionProvider"):
        if strategy not in STRATEGIES:
            raise UsageError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if soft_method not in SOFT_METHODS:
            raise UsageError(f"--soft-method must be one of {', '.join(SOFT_METHODS)}")
        if round_to != "auto" and (not isinstance(round_to, int) or round_to < 1) or min_width < 1:
            raise UsageError("--round-to must be 'auto' or >= 1, --min-width >= 1")
        if target_params is not None and target_macs is not None:
            raise UsageError("give --target-params or --target-macs, not both")
        if not 0.0 < max_ratio < 1.0:
            raise UsageError("--max-ratio must be in (0, 1)")
        self.strategy, self.ratio = strategy, parse_ratio(ratio)
        self.target = (Target("params", target_params) if target_params is not None else
                       Target("macs", target_macs) if target_macs is not None else None)
        self.constraint = Constraint.parse(constraint) if constraint else None
        if self.constraint is not None and strategy != "sensitivity":
            raise UsageError("--constraint works with --strategy sensitivity")
        self.tolerance, self.soft_method = tolerance, soft_method
        self.round_to, self.min_width, self.max_ratio = round_to, min_width, max_ratio
        self.normalize, self.latency_provider = normalize, latency_provider

    def needs(self) -> set[str]:
        searched = self.strategy in ("sensitivity", "soft")
        return set(self.requires) | ({"eval_data"} if searched else set())

    def run(self, ctx: Context) -> PassResult:
        analysis = ctx.require("analysis", self.name)
        scores = ctx.scores if ctx.scores is not None else np.zeros(analysis.num_units)
        check_names(self.ratio, ctx.components.names if ctx.components is not None else ())
        cost = CostModel(ctx.graph, analysis)
        info: dict = {"strategy": self.strategy}
        self._round_to = self.round_to
        if self.round_to == "auto":
            probe = probe_round_to(ctx.graph, self.latency_provider)
            self._round_to = probe.choice if probe is not None else 1
            info["round_to"] = self._round_to
            if probe is not None:
                info["latency_probe"] = {"layer": probe.layer, "cost": probe.cost}
        if self.strategy == "uniform" and self.target is None:
            removed = select_uniform(analysis, scores, self.ratio, self._round_to,
                                     self.min_width).removed
        else:
            removed = self._search(ctx, analysis, scores, cost, info)
        info["params_reduction"] = cost.reduction(removed, "params")
        info["macs_reduction"] = cost.reduction(removed, "macs")
        self._warn_short(info)
        ctx.plan = PrunePlan(removed, {
            g.id: (g.channels, g.channels - int(removed[g.units].sum())) for g in analysis.groups
        })
        ctx.select_info = info
        return PassResult(False, {k: v for k, v in info.items() if not isinstance(v, list)})

    def _warn_short(self, info: dict) -> None:
        """Say so when a target could not be reached (group caps, widths, rounding)."""
        if self.target is None:
            return
        reached = info[f"{self.target.kind}_reduction"]
        slack = self.tolerance if self.strategy == "soft" else 1e-6
        if reached < self.target.fraction - slack:
            warn(f"target: remove {self.target.fraction:.3g} of the {self.target.kind}, reached "
                 f"{reached:.3g} (each group may lose at most max_ratio={self.max_ratio:g} of its "
                 f"channels and keeps min_width={self.min_width})")

    def _search(self, ctx, analysis, scores, cost, info) -> np.ndarray:
        # named components keep their ratio as a cap; every other group may lose max_ratio
        caps = {**self.ratio, "*": self.max_ratio}
        space = Space(analysis, scores, cost, caps, self._round_to, self.min_width)
        target = self.target
        if target is None and self.constraint is None:
            # the same budget as the uniform ratio would give
            uniform = select_uniform(analysis, scores, self.ratio, self._round_to, self.min_width)
            target = Target("params", cost.reduction(uniform.removed, "params"))
        info["target"] = None if target is None else (target.kind, target.fraction)
        if self.strategy == "uniform":
            f = bisect_shared_fraction(space, target)
            return space.mask(space.counts_for_fractions([f] * len(space.groups)))
        if self.strategy == "global":
            return select_global(space, normalize(analysis, scores, self.normalize), target)
        ev = evaluator(ctx, f"--strategy {self.strategy}")
        if self.strategy == "sensitivity":
            cev = None
            if self.constraint is not None and self.constraint.metric != ev.metric.name:
                from ..search.evaluate import Evaluator

                cev = Evaluator(export_model(ctx.graph), analysis, ctx.calib,
                                get_metric(self.constraint.metric))
            removed, extra = select_sensitivity(space, ev, target, self.constraint, cev,
                                                target.kind if target else "params")
            if extra.get("satisfied") is False:
                c = self.constraint
                raise ConstraintError(
                    f"constraint {c.metric}{c.op}{c.bound:g} cannot be met: the unpruned model "
                    f"scores {c.metric} {extra['unpruned']:.4g} on the calibration data; "
                    "nothing written")
            info.update(steps=extra["steps"], satisfied=extra.get("satisfied"))
            return removed
        run = soft_gradient if self.soft_method == "gradient" else soft_grid
        removed, extra = run(space, ev, target, self.tolerance)
        info.update(coefficients=[float(c) for c in extra["coefficients"]],
                    evaluations=extra["evaluations"])
        return removed


class RemoveChannels(Pass):
    name = "remove"
    description = "Slice parameters, fix attributes and shapes of the selected channels."
    requires = ("analysis", "plan")
    provides = ("reference",)

    def run(self, ctx: Context) -> PassResult:
        graph, analysis = ctx.require("graph", self.name), ctx.require("analysis", self.name)
        plan = ctx.require("plan", self.name)
        ctx.reference = graph.copy()  # shares the weights; removal assigns new arrays
        removed = remove_units(graph, analysis, plan.removed)
        return PassResult(plan.removed_units > 0, {"params_removed": removed})
