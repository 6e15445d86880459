"""Pruning passes: score channels, choose how many each group loses, remove them."""

from __future__ import annotations

import contextlib
import json

import numpy as np

from ...analysis.blocks import with_blocks
from ...analysis.size import graph_params, macs_at, node_costs
from ...bench.remote import Host
from ...errors import ConstraintError, warn
from ...ir import io
from ...latency.target import LatencyTarget, parse_latency
from ...latency.timer import timer
from ...options import Option, OptionError, auto_or_count, number
from ...options import path as path_option
from ...recover.compensate import RIDGE
from ...recover.refit import RefitEvaluator, can_refit
from ...scoring import CRITERIA, NORMALIZATIONS, REDUCTIONS, normalize, score_units
from ...search.evaluate import Evaluator
from ...search.memory import search_budget
from ...search.quality import get_metric
from ...select.budget import check_names, parse_ratio
from ...select.common import Space, Target, bisect_shared_fraction
from ...select.cost import CostModel
from ...select.global_threshold import select_global
from ...select.latency import probe_round_to
from ...select.plans import plan_json, read_plan
from ...select.sensitivity import Constraint, select_sensitivity
from ...select.uniform import PrunePlan, select_uniform
from ..base import Context, Pass, PassResult
from ..support.inputs import verification_feeds
from ..support.soft_criteria import criterion_auto, soft, soft_by_criteria
from ..support.stages import probe
from .data import augmented_evaluator, evaluator, sampled, sampled_evaluator

STRATEGIES = ("uniform", "global", "sensitivity", "soft")
LATENCY_ROUND_TO = 8
SOFT_METHODS = ("gradient", "finite", "grid")


class ScoreChannels(Pass):
    name = "score"
    description = "Importance per channel: " + ", ".join(CRITERIA) + "."
    evaluates = True
    requires = ("analysis",)
    provides = ("scores",)
    uses = ("bn_scales", "calib", "criterion", "graph")

    options = (
        Option("criterion", None, "channel importance (default: reconstruction when "
               "calibration data is given, else l2; strategy soft with calibration data tries "
               "l2, activation and reconstruction and keeps the best by the metric): l1/l2 weight magnitude, bn (BatchNorm "
               "scale), lamp, fpgm, activation (mean |a| on calibration data), apoz, "
               "reconstruction (how well the consuming layers can be refit without the "
               "channel: greedy structured OBS on calibration data), taylor (finite differences "
               "over the gates) or metric (drop in the metric when the channel is closed); the "
               "last five need calibration data", choices=CRITERIA, public="criterion"),
        Option("reduce", "mean", "how a channel's scores over the group's layers combine",
               choices=REDUCTIONS, public="reduce"),
    )

    def setup(self) -> None:
        self.chosen = self.criterion or "l2"  # before the run knows whether data is given

    def needs(self) -> set[str]:
        extra = {"activation": {"calib"}, "apoz": {"calib"}, "reconstruction": {"calib"},
                 "taylor": {"eval_data"},
                 "metric": {"eval_data"}}.get(self.chosen, set())
        return set(self.requires) | extra

    def run(self, ctx: Context) -> PassResult:
        analysis = ctx.require("analysis", self.name)
        criterion = self.criterion or ("reconstruction" if ctx.calib is not None else "l2")
        ev = evaluator(ctx, f"criterion {criterion}") if criterion in (
            "taylor", "metric") else None
        ctx.scores = score_units(
            criterion, ctx.graph, analysis, reduce=self.reduce, evaluator=ev,
            reference=ctx.skeleton() if criterion in ("activation", "apoz", "reconstruction")
            else None,
            calib=ctx.calib, bn_scales=ctx.bn_scales,
        )
        ctx.criterion = criterion
        return PassResult(False, {"criterion": criterion})


class SelectChannels(Pass):
    name = "select"
    description = "How many channels each group loses: " + ", ".join(STRATEGIES) + "."
    evaluates = True
    requires = ("analysis",)
    provides = ("plan",)
    uses = ("calib", "components", "criterion", "factors", "graph", "metric", "scores",
            "select_info", "source_path")

    options = (
        Option("strategy", "uniform", "how many channels each group loses: uniform (the ratio "
               "everywhere), global (one threshold over normalized scores), sensitivity "
               "(per-group metric curves), soft (optimised per-group coefficients)",
               choices=STRATEGIES, public="strategy"),
        Option("ratio", 0.5, "fraction of channels removed from every prunable group, 0 <= R < "
               "1, or per component: '*=0.5,pi=0' ('*' is every other component; a component at "
               "0 keeps its weights byte-identical)", parse=parse_ratio, public="ratio",
               metavar="R|NAME=R,...", type_name="ratio"),
        Option("target_params", None, "remove this fraction of the parameters (non-uniform "
               "strategies default to what the uniform ratio would remove)",
               parse=number(0, 1, hi_open=True), public="target_params", metavar="F",
               type_name="float"),
        Option("target_macs", None, "remove this fraction of the MACs",
               parse=number(0, 1, hi_open=True), public="target_macs", metavar="F",
               type_name="float"),
        Option("target_latency", None, "keep at most this fraction of the original's latency "
               "(0.5), or this time (4ms), measured on the first provider: a per-layer latency "
               "table (measured once per device, cached) guides the selection, and the cut is "
               "measured end to end against the original and corrected until within 5%",
               parse=parse_latency, public="target_latency", metavar="F|TIME",
               type_name="latency"),
        Option("latency_batch", 1, "the batch size a latency target is measured at",
               parse=number(1, integer=True), public="latency_batch", metavar="B",
               type_name="int"),
        Option("latency_cache", "on", "reuse the per-layer latency table measured on this "
               "device before (the user's cache folder); off: measure afresh",
               choices=("on", "off"), public="latency_cache", type_name="str"),
        Option("constraint", None, "with strategy sensitivity: the largest cut whose measured "
               "metric still satisfies e.g. 'psnr>=20' (>= or <=, any metric)",
               parse=Constraint.parse, public="constraint", metavar="METRIC>=V",
               type_name="str"),
        Option("refit", "auto", "with strategy sensitivity: measure every candidate cut after "
               "the least-squares refit compensation makes (one Gram matrix per layer from the "
               "calibration data), so the search cuts what compensation can repair; auto: when "
               "the run compensates, unless it measures the random-token probe (a model that "
               "reads token ids: the refit learns the calibration text's style, and cuts that "
               "need it read worse on other text)", choices=("auto", "on", "off"),
               public="search_refit"),
        Option("augment", "auto", "with strategy sensitivity: measure candidates also on N "
               "copies of the calibration data in other styles (compensate_augment's); auto: "
               "1 when a token table was factorized and the run measures the random-token probe "
               "(the table's rank changes every token, the calibration data reads few)",
               parse=auto_or_count(0), public="search_augment", metavar="N|auto",
               type_name="int|auto"),
        Option("tolerance", 0.02, "how close soft coefficients must bring the reduction to the "
               "target", parse=number(0, 1), public="tolerance", metavar="T", type_name="float"),
        Option("soft_method", "gradient", "the optimiser of soft coefficients: gradient "
               "(back-propagated through the gated graph in torch for the built-in metrics; "
               "finite differences without torch or for a user metric), finite (finite "
               "differences always), grid (coordinate search)", choices=SOFT_METHODS,
               public="soft_method"),
        Option("round_to", 1, "keep a multiple of N channels in every group; 'auto' measures "
               "how the main layer's latency steps with its width on the first provider and "
               "picks the largest multiple that costs no time", parse=auto_or_count(1),
               public="round_to", metavar="N|auto", type_name="int|auto"),
        Option("min_width", 1, "never keep fewer than N channels in a group (never zero)",
               parse=number(1, integer=True), public="min_width", metavar="N", type_name="int"),
        Option("max_ratio", 0.9, "the most any group may lose under global/sensitivity/soft",
               parse=number(0, 1, lo_open=True, hi_open=True), public="max_ratio",
               metavar="F", type_name="float"),
        Option("normalize_scores", "mean", "per-group score normalization for strategy global",
               choices=NORMALIZATIONS, public="normalize_scores"),
        Option("depth", "off", "with strategy sensitivity or soft, auto: every removable "
               "residual block is a candidate beside the channel cuts (removed whole), so the "
               "search meets the target by the mix of depth and width that costs the metric "
               "least (sensitivity: per parameter or MAC saved; soft: a coefficient per block "
               "that scales its branch, the block going at one half); off: channels only",
               choices=("off", "auto"), public="depth"),
        Option("plan", None, "take the cut from a plan file written by save_plan for this "
               "model (no scoring or search; the strategy and targets do not apply)",
               parse=path_option, public="plan", metavar="FILE.json", type_name="path"),
        Option("save_plan", None, "write the chosen cut to this JSON file right after the "
               "selection (it stays if a later stage fails: rerun with plan)",
               parse=path_option, public="save_plan", metavar="FILE.json", type_name="path"),
        Option("samples", None, "the sensitivity search measures its candidates on at most N "
               "of the calibration samples (a seeded draw) where there are more; scoring, "
               "compensation and distillation still use them all (default: every sample)",
               parse=number(1, integer=True), public="search_samples", metavar="N",
               type_name="int"),
    )

    def setup(self) -> None:
        if self.plan is not None:
            given = [o for o, v in (("strategy", self.strategy != "uniform"),
                                    ("target_params", self.target_params is not None),
                                    ("target_macs", self.target_macs is not None),
                                    ("constraint", self.constraint is not None)) if v]
            if given:
                raise OptionError(self.name, given[0], "the plan gives the cut; a plan run takes "
                                  "no strategy, target or constraint")
        if self.refit == "on" and self.strategy != "sensitivity" and self.plan is None:
            raise OptionError(self.name, "refit", "works with strategy sensitivity "
                              f"(the strategy is {self.strategy})")
        given = [o for o in ("target_params", "target_macs", "target_latency")
                 if getattr(self, o) is not None]
        if len(given) > 1:
            raise OptionError(self.name, given[1], f"give one target ({' or '.join(given)})")
        if self.target_latency is not None and self.plan is not None:
            raise OptionError(self.name, "target_latency", "the plan gives the cut")
        for option in ("constraint", "samples"):
            if getattr(self, option) is not None and self.strategy != "sensitivity":
                raise OptionError(self.name, option, "works with strategy sensitivity "
                                  f"(the strategy is {self.strategy})")
        if self.depth == "auto" and (self.strategy not in ("sensitivity", "soft")
                                     or self.plan is not None):
            raise OptionError(self.name, "depth", "auto works with strategy sensitivity or "
                              f"soft (the strategy is {'a plan' if self.plan else self.strategy})")
        self.target = (Target("params", self.target_params) if self.target_params is not None
                       else Target("macs", self.target_macs) if self.target_macs is not None
                       else None)

    def needs(self) -> set[str]:
        searched = self.strategy in ("sensitivity", "soft")
        return set(self.requires) | ({"eval_data"} if searched else set())

    def preflight(self, ctx: Context) -> None:
        if self.plan is not None and not self.plan.is_file():
            raise OptionError(self.name, "plan", f"{self.plan}: no such file")
        if self.save_plan is not None:
            io.output_target(self.save_plan)

    def run(self, ctx: Context) -> PassResult:
        analysis = ctx.require("analysis", self.name)
        scores = ctx.scores if ctx.scores is not None else np.zeros(analysis.num_units)
        check_names(self.ratio, ctx.components.names if ctx.components is not None else ())
        blocks: list = []
        if self.depth == "auto":  # blocks join the analysis as units of their own
            analysis, scores, blocks = _with_blocks(ctx, analysis, scores)
        cost = CostModel(ctx.graph, analysis, blocks)
        info: dict = {"strategy": self.strategy, "criterion": ctx.criterion}
        self._round_to = self.round_to
        if self.target_latency is not None and "round_to" not in self.given:
            # odd widths can run slower than the original's (a kernel's vector lanes): a
            # latency target keeps multiples of 8 unless told otherwise
            self._round_to = LATENCY_ROUND_TO
        if self.round_to == "auto":
            probe = probe_round_to(ctx.graph, ctx.config.providers[0])
            self._round_to = probe.choice if probe is not None else 1
            info["round_to"] = self._round_to
            if probe is not None:
                info["latency_probe"] = {"layer": probe.layer, "cost": probe.cost}
        self._target = _from_input(ctx, self.target, info)
        if self.plan is not None:
            removed, made = read_plan(self.plan, analysis)
            info.update(strategy="plan", plan=str(self.plan), planned=made)
        elif self.target_latency is not None:
            removed = self._latency(ctx, analysis, scores, cost, info, blocks)
        elif self._target is not None and self._target.fraction <= 0:
            removed = np.zeros(analysis.num_units, bool)  # keep_classes removed enough
        elif self.strategy == "uniform" and self.target is None:
            removed = select_uniform(analysis, scores, self.ratio, self._round_to,
                                     self.min_width).removed
        else:
            removed = self._search(ctx, analysis, scores, cost, info, [u for u, _ in blocks])
        info["params_reduction"] = cost.reduction(removed, "params")
        info["macs_reduction"] = cost.reduction(removed, "macs")
        self._warn_short(info)
        ctx.plan = PrunePlan(removed, {
            g.id: (g.channels, g.channels - int(removed[g.units].sum())) for g in analysis.groups
        })
        if self.save_plan is not None:
            where = str(ctx.source_path) if ctx.source_path is not None else None
            info["factorized"] = [f.weight for f in ctx.factors or ()]  # a plan run does too
            data = plan_json(analysis, removed, info, where)
            io.write_file(self.save_plan, (json.dumps(data, indent=1) + "\n").encode(), "plan")
            info["saved_plan"] = str(self.save_plan)
        ctx.select_info = info
        return PassResult(False, {k: v for k, v in info.items()
                                  if not isinstance(v, (list, dict))})

    def _copies(self, ctx: Context) -> int:
        if self.augment != "auto":
            return int(self.augment)
        return int(probe(ctx) is not None and any(f.kind == "table" for f in ctx.factors or ()))

    def _refit(self, ctx: Context, ev: Evaluator) -> tuple[float, dict] | None:
        """The ridge and the data of the refit candidates are measured after (None: they are
        measured as cut): the compensation pass's."""
        comp = next((p for p in ctx.planned if p.name == "compensate"), None)
        text = probe(ctx) is not None  # a token model's refit learns the calibration text
        if self.refit == "off" or (self.refit == "auto" and (comp is None or text)):
            return None
        why = can_refit(ev)
        if why is not None:
            if self.refit == "on":
                warn(f"search_refit: candidates are measured without a refit ({why})")
            return None
        if comp is None:
            warn("search_refit on: the search measures cuts after a refit, but this run does "
                 "not compensate (add compensate)")
            return RIDGE, ctx.calib
        return float(comp.ridge), comp.fit_data(ctx)

    def _warn_short(self, info: dict) -> None:
        """Say so when a target could not be reached (group caps, widths, rounding)."""
        target = self._target
        if target is None:
            return
        reached = info[f"{target.kind}_reduction"]
        slack = self.tolerance if self.strategy == "soft" else 1e-6
        if reached < target.fraction - slack:
            warn(f"target: remove {target.fraction:.3g} of the {target.kind}, reached "
                 f"{reached:.3g} (each group may lose at most max_ratio={self.max_ratio:g} of its "
                 f"channels and keeps min_width={self.min_width})")

    def _latency(self, ctx, analysis, scores, cost, info, blocks) -> np.ndarray:
        """The cut that measures within 5% of the latency target (end to end, corrected)."""
        shapes = {k: list(np.shape(v)) for k, v in
                  verification_feeds(ctx, [ctx.skeleton()], seed=0)[0].items()}
        with contextlib.ExitStack() as stack:
            host = ctx.config.target_host
            opened = stack.enter_context(Host(host)) if host else None
            provider = ctx.config.providers[0]
            lt = LatencyTarget(ctx.graph, analysis, shapes, self.target_latency,
                               self.latency_batch, provider, self.latency_cache == "on",
                               blocks=blocks, timer=timer(provider, opened))
            return self._meet(ctx, analysis, scores, cost, info, blocks, lt)

    def _meet(self, ctx, analysis, scores, cost, info, blocks, lt) -> np.ndarray:
        cost.latency = lt.model
        def quality(removed: np.ndarray) -> float:  # asked only when no cut is in the band
            ev = evaluator(ctx, "the latency target")
            return ev.metric.utility(ev.evaluate(~removed))

        scored = ctx.calib is not None or getattr(ctx.metric, "on_model", False)
        try:
            return lt.meet(lambda fraction: self._search(
                ctx, analysis, scores, cost, info, [u for u, _ in blocks],
                Target("latency", fraction)), quality if scored else None)
        finally:
            info["latency"] = lt.run.json(getattr(lt.run, "chosen", None))

    def _search(self, ctx, analysis, scores, cost, info, blocks=(), target=None) -> np.ndarray:
        # named components keep their ratio as a cap; every other group may lose max_ratio
        caps = {**self.ratio, "*": self.max_ratio}
        space = Space(analysis, scores, cost, caps, self._round_to, self.min_width, blocks)
        target = target or self._target
        if target is None and self.constraint is None:
            # the same budget as the uniform ratio would give
            uniform = select_uniform(analysis, scores, self.ratio, self._round_to, self.min_width)
            target = Target("params", cost.reduction(uniform.removed, "params"))
        shown = self.target if self.target is not None else target  # as the user gave it
        info["target"] = None if shown is None else (shown.kind, shown.fraction)
        if self.strategy == "uniform":
            f = bisect_shared_fraction(space, target)
            return space.mask(space.counts_for_fractions([f] * len(space.groups)))
        if self.strategy == "global":
            return select_global(space, normalize(analysis, scores, self.normalize_scores),
                                 target)
        ev = evaluator(ctx, f"strategy {self.strategy}")
        if self.strategy == "sensitivity":
            cev = sev = scev = None
            few = sampled(ctx, self.samples) if self.samples and ctx.calib is not None else None
            aev = augmented_evaluator(ctx, self._copies(ctx), few)
            own = sampled_evaluator(ctx, few) if few is not None and aev is None else None
            ev = aev or own or ev
            info["search_samples"] = ev.n
            if self.constraint is not None and self.constraint.metric != ev.metric.name:
                cev = Evaluator(ctx.skeleton(), analysis, ctx.calib if few is None else few,
                                get_metric(self.constraint.metric), memory=search_budget(),
                                costs=node_costs(ctx.graph))
            try:
                refit = self._refit(ctx, ev)
                if refit is not None:
                    ridge, data = refit
                    sev = RefitEvaluator(ev, ctx.graph, ctx.skeleton(), analysis, data,
                                         ridge, memory=search_budget(),
                                         skip=frozenset(f.node for f in ctx.factors or ()))
                    scev = None if cev is None else RefitEvaluator(cev, ctx.graph, None,
                                                                   analysis, None, ridge,
                                                                   grams_of=sev)
                removed, extra = select_sensitivity(space, sev or ev, target, self.constraint,
                                                    scev or cev,
                                                    target.kind if target else "params")
                if sev is not None:
                    info["refit"] = sev.summary()
            finally:
                for e in (cev, sev, scev, aev, own):
                    if e is not None:
                        e.close()
            if extra.get("satisfied") is False:
                c = self.constraint
                raise ConstraintError(
                    f"constraint {c.metric}{c.op}{c.bound:g} cannot be met: the unpruned model "
                    f"scores {c.metric} {extra['unpruned']:.4g} on the calibration data; "
                    "nothing written")
            info.update(steps=extra["steps"], satisfied=extra.get("satisfied"),
                        curve_points=extra.get("curve_points"),
                        curves=_curves(space, extra["curves"], removed, ev.metric))
            return removed
        def run(on: Space, seen: dict) -> np.ndarray:
            return soft(on, ev, target, seen, self.soft_method, self.tolerance)

        def space_of(ranks: np.ndarray) -> Space:  # the same space, channels ranked by ``ranks``
            return Space(analysis, ranks, cost, caps, self._round_to, self.min_width, blocks)

        if not criterion_auto(ctx):
            return run(space, info)
        return soft_by_criteria(ctx, analysis, scores, info, ev, run, space_of)


def _with_blocks(ctx: Context, analysis, scores):
    """The analysis with a unit per removable residual block (the context's from now on: the
    oracle gates them, the plan removes them, the depth pass rewrites them), the scores with
    theirs, and (unit, block) pairs."""
    from .depth import candidates

    depth = next((p for p in ctx.planned if p.name == "depth"), None)
    found = candidates(ctx, ctx.graph, depth.unit if depth else "block")
    removable = [b for b in found if b.removable]
    n = analysis.num_units
    grown, _ = with_blocks(analysis, np.zeros(n, bool), removable, [])
    ctx.analysis, ctx.scores = grown, np.concatenate([scores, np.zeros(len(removable))])
    ctx.depth = {"blocks": found, "removable": removable, "removed": [], "scores": {},
                 "units": n, "by": "search", "data": "calibration"}
    return grown, ctx.scores, [(n + i, b) for i, b in enumerate(removable)]


def _from_input(ctx: Context, target: Target | None, info: dict) -> Target | None:
    """A parameter or MAC target counts from the model before keep_classes / keep_tokens: what
    trimming classes or tokens removed counts toward it, and the channels make up the rest (of
    the trimmed model; MACs at the first verification shapes)."""
    if target is None or target.kind not in ("params", "macs") or ctx.origin is None:
        return target
    if target.kind == "params":
        before, now = graph_params(ctx.origin), graph_params(ctx.graph)
    else:
        shapes = ctx.input_sets[0] if ctx.input_sets else None
        before, now = macs_at(ctx.origin, shapes), macs_at(ctx.graph, shapes)
    rest = max(1.0 - (1.0 - target.fraction) * before / max(now, 1), 0.0)
    info["target_after_trim"] = rest
    return Target(target.kind, rest)


def _curves(space: Space, curves, removed: np.ndarray, metric) -> list[dict]:
    """Each searched group's curve as the report shows it: the metric (not its utility) at
    each fraction of the group's prunable channels cut alone that was measured, and the
    fraction chosen."""
    sign = 1.0 if metric.higher_is_better else -1.0
    out = []
    for g, c in zip(space.groups, curves, strict=True):
        n = max(int(g.order.size), 1)
        seen = ~np.isnan(c.utility)  # a target's search measures only the levels it needs
        out.append({"group": int(g.gid), "channels": int(g.order.size),
                    "fractions": [float(k) / n for k in c.counts[seen]],
                    "metric": [float(sign * u) for u in c.utility[seen]],
                    "chosen": float(removed[g.order].sum()) / n})
    return out
