"""Depth: remove whole residual blocks (the branch of ``y = x + f(x)``), chosen by score."""

from __future__ import annotations

from typing import Any

from ..analysis.blocks import Block, find_blocks
from ..errors import UsageError
from ..options import Option, number
from ..rewrite.blocks import remove_blocks
from ..scoring.blocks import block_influence
from .base import Context, Pass, PassResult
from .inputs import verification_feeds


def block_json(b: Block, score: float | None = None) -> dict[str, Any]:
    out = {"name": b.name, "kind": b.kind, "params": b.params, "macs": b.macs,
           "nodes": len(b.nodes), "removable": b.removable, "reason": b.reason}
    if score is not None:
        out["influence"] = float(f"{float(score):.4g}")
    return out


class RemoveBlocks(Pass):
    name = "depth"
    description = ("Remove the N residual blocks that change their stream least (Block "
                   "Influence on the calibration data); verified with a gate per block.")
    requires = ("graph", "reference", "analysis")
    provides = ("depth",)

    options = (
        Option("remove", 0, "remove this many whole residual blocks (attention or MLP "
               "sub-blocks, CNN blocks with an identity shortcut), those whose output differs "
               "least from their input (1 - cosine, on the calibration data or random inputs); "
               "onnxprune analyze lists them", parse=number(0, integer=True),
               public="remove_blocks", metavar="N", type_name="int"),
    )

    def run(self, ctx: Context) -> PassResult:
        reference = ctx.require("reference", self.name)
        analysis = ctx.require("analysis", self.name)
        blocks = find_blocks(reference, analysis.node_macs)
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
        scores = block_influence(model, removable, outputs, feeds, analysis.slots)
        order = sorted(range(len(removable)), key=lambda i: (scores[i], i))
        gone = [removable[i] for i in sorted(order[:self.remove])]
        remove_blocks(ctx.graph, gone)
        ctx.depth.update(removed=gone, scores={b.name: float(s) for b, s in
                                               zip(removable, scores, strict=True)},
                         data="calibration" if ctx.calib is not None else "random")
        return PassResult(True, {"removed": [b.name for b in gone]})


def _add_output(graph, block: Block) -> str:
    return next(n.outputs[0].name for n in graph.nodes if n.name == block.name)
