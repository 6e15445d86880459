"""Depth: remove whole residual blocks (the branch of ``y = x + f(x)``), chosen by score."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...analysis.blocks import Block, find_blocks, kept_by_components, with_blocks
from ...errors import UsageError, warn
from ...options import Option, number
from ...rewrite.blocks import remove_blocks
from ...scoring.blocks import block_influence
from ..base import Context, Pass, PassResult
from ..support import stages
from ..support.inputs import verification_feeds


def block_json(b: Block, score: float | None = None) -> dict[str, Any]:
    out = {"name": b.name, "kind": b.kind, "params": b.params, "macs": b.macs,
           "nodes": len(b.nodes), "removable": b.removable, "reason": b.reason}
    if b.cache:  # the key/value cache pair that goes with it (--prune-kv-cache)
        out["cache"] = [name for pair in b.cache for name in pair]
    if score is not None:
        out["score"] = float(f"{float(score):.4g}")
    return out


class RemoveBlocks(Pass):
    name = "depth"
    description = ("Remove the N residual blocks that change their stream least (Block "
                   "Influence on the calibration data); verified with a gate per block.")
    requires = ("graph", "reference", "analysis")
    provides = ("depth",)
    uses = ("calib", "plan", "quality")

    options = (
        Option("remove", 0, "remove this many whole residual blocks (attention or MLP "
               "sub-blocks, CNN blocks with an identity shortcut), those whose output differs "
               "least from their input (1 - cosine, on the calibration data or random inputs); "
               "onnxprune analyze lists them", parse=number(0, integer=True),
               public="remove_blocks", metavar="N", type_name="int"),
        Option("score", "influence", "how blocks are ranked: influence (1 - cosine of the "
               "stream before and after the block: ShortGPT's Block Influence), metric (the "
               "application metric with the block's gate closed, each alone), iterative (the "
               "metric again after each removal, with the removed blocks closed: SLEB)",
               choices=("influence", "metric", "iterative"), public="block_score",
               type_name="str"),
        Option("unit", "block", "what one block is: block (an attention, MLP or CNN residual "
               "branch) or layer (a pre-norm transformer layer: its attention block and the MLP "
               "block that reads its output, removed together)", choices=("block", "layer"),
               public="block_unit", type_name="str"),
    )

    def run(self, ctx: Context) -> PassResult:
        reference = ctx.require("reference", self.name)
        analysis = ctx.require("analysis", self.name)
        if ctx.depth and "units" in ctx.depth:  # the selection chose blocks with the channels
            if self.remove:
                raise UsageError("remove_blocks: the search chooses the blocks (depth auto); "
                                 "give one of them")
            n, removable = ctx.depth["units"], ctx.depth["removable"]
            gone = [b for i, b in enumerate(removable) if ctx.plan.removed[n + i]]
            return self._remove(ctx, gone)
        blocks = candidates(ctx, reference, self.unit)
        removable = [b for b in blocks if b.removable]
        if self.remove > len(removable):
            raise UsageError(f"remove_blocks: {self.remove} asked, the model has "
                             f"{len(removable)} removable block(s) (onnxprune analyze lists "
                             "them, and why the others are not)")
        ctx.depth = {"blocks": blocks, "removable": removable, "removed": [], "scores": {}}
        if not self.remove:
            return PassResult(False, {"blocks": len(blocks), "removable": len(removable)})
        model = ctx.skeleton(reference)
        outputs = {b.name: _add_output(reference, b) for b in removable}
        feeds = ctx.calib if ctx.calib is not None else verification_feeds(
            ctx, [model], seed=0)[-1]
        feeds = {k: v for k, v in feeds.items() if k in {i.name for i in reference.inputs}}
        ev = _evaluator(ctx, model, removable) if (
            self.score != "influence" or ctx.quality is not None) else None
        if self.score == "influence":
            scores = block_influence(model, removable, outputs, feeds, analysis.slots)
            order = sorted(range(len(removable)), key=lambda i: (scores[i], i))[:self.remove]
        else:
            order, scores = _by_metric(ctx, ev, removable, self.remove,
                                       iterative=self.score == "iterative")
        gone = [removable[i] for i in sorted(order)]
        if ctx.quality is not None:  # the metric after the cut: the channels and the blocks
            ctx.quality["after"] = float(ev.evaluate(_keep(ctx, len(removable), order)))
        if ev is not None:
            ev.close()
        ctx.depth.update(scores={b.name: float(s) for b, s in
                                 zip(removable, scores, strict=True)},
                         by=self.score, data="calibration" if ctx.calib is not None else "random")
        return self._remove(ctx, gone)

    @staticmethod
    def _remove(ctx: Context, gone: list[Block]) -> PassResult:
        cache = [name for b in gone for pair in b.cache for name in pair]
        names = {b.name for b in gone}
        readers = sorted({c.name for n in ctx.graph.nodes if n.name in names
                          for c in n.outputs[0].outputs})
        if gone:
            remove_blocks(ctx.graph, gone)
        if cache:
            warn("the model's interface changes (the removed attention blocks take their "
                 f"key/value cache with them; feed and read it without): {', '.join(cache)}")
        ctx.depth.update(removed=gone, readers=readers, cache=cache)
        return PassResult(bool(gone), {"removed": [b.name for b in gone]})


def candidates(ctx: Context, graph, unit: str) -> list[Block]:
    """The graph's blocks as this run may remove them: with their key/value cache pair when the
    cache may change, never in a component that keeps its weights (``--ratio "pi=0"``)."""
    kv = next((p.kv_cache for p in ctx.planned if p.name == "analyze"), False)
    blocks = find_blocks(graph, ctx.analysis.node_macs, unit, cache=kv)
    select = next((p for p in ctx.planned if p.name == "select"), None)
    kept = {c for c, r in (select.ratio if select else {}).items() if c != "*" and r == 0}
    if ctx.components is None or not kept:
        return blocks
    return kept_by_components(blocks, ctx.components.of_node, kept)


def _add_output(graph, block: Block) -> str:
    return next(n.outputs[0].name for n in graph.nodes if n.name == block.name)


def _evaluator(ctx: Context, model, removable: list[Block]):
    """The mask-oracle evaluator with a gate per block (the channel gates as the analysis's)."""
    from ...analysis.size import node_costs
    from ...search.evaluate import Evaluator
    from ...search.memory import search_budget
    from ...search.quality import get_metric

    metric = ctx.metric or get_metric("cosine")
    if ctx.calib is None and not metric.on_model:
        raise UsageError("remove_blocks: scoring blocks by the metric needs calibration data "
                         "(--calib)")
    analysis, _ = with_blocks(ctx.analysis, ctx.plan.removed, removable, [])
    return Evaluator(model, analysis, ctx.calib, metric, memory=search_budget(),
                     reads=stages.reads(ctx), costs=node_costs(ctx.graph))


def _keep(ctx: Context, blocks: int, closed: list[int]) -> np.ndarray:
    """Gates: the channel cut's, and the ``closed`` blocks' at zero."""
    n = ctx.analysis.num_units
    keep = np.ones(n + blocks, np.float32)
    keep[:n] = ~ctx.plan.removed
    keep[[n + i for i in closed]] = 0.0
    return keep


def _by_metric(ctx: Context, ev, removable: list[Block], count: int, iterative: bool
               ) -> tuple[list[int], list[float]]:
    """The blocks whose closed gate costs the metric least (its loss against the unpruned
    model, on the calibration data): all scored alone, or one at a time with those already
    chosen closed. Returns the chosen indices and each block's last measured loss."""
    n = ctx.analysis.num_units
    chosen: list[int] = []
    losses = [float("nan")] * len(removable)
    base = ev.metric.utility(ev.base)
    while len(chosen) < count:
        todo = [i for i in range(len(removable)) if i not in chosen]
        masks = np.repeat(_keep(ctx, len(removable), chosen)[None], len(todo), axis=0)
        for row, i in enumerate(todo):
            masks[row, n + i] = 0.0
        values = ev.evaluate_many(masks)
        for i, v in zip(todo, values, strict=True):
            losses[i] = base - ev.metric.utility(float(v))
        ranked = sorted(todo, key=lambda i: (losses[i], i))
        if not iterative:
            return ranked[:count], losses
        chosen.append(ranked[0])
    return chosen, losses
