"""The pass that removes the selected channels from the graph (``rewrite/remove.py``)."""

from __future__ import annotations

from ...errors import warn
from ...rewrite.remove import remove_units
from ..base import Context, Pass, PassResult


class RemoveChannels(Pass):
    name = "remove"
    description = "Slice parameters, fix attributes and shapes of the selected channels."
    requires = ("analysis", "plan")
    provides = ("reference",)
    uses = ("graph", "interface")

    def run(self, ctx: Context) -> PassResult:
        graph, analysis = ctx.require("graph", self.name), ctx.require("analysis", self.name)
        plan = ctx.require("plan", self.name)
        ctx.reference = graph.copy()  # shares the weights; removal assigns new arrays
        names = [t.name for t in [*graph.inputs, *graph.outputs]]
        ctx.interface = analysis.interface_cuts(names, plan.removed) or None
        removed = remove_units(graph, analysis, plan.removed)
        info = {"params_removed": removed}
        if ctx.interface:
            info["interface"] = {n: {str(a): f"{k.size} -> {int(k.sum())}" for a, k in axes}
                                 for n, axes in ctx.interface.items()}
            shown = ", ".join(f"{n} axis {a}: {k.size} -> {int(k.sum())}"
                              for n, axes in ctx.interface.items() for a, k in axes)
            warn(f"the model's interface changes (feed and read the cache at its new shapes): "
                 f"{shown}")
        return PassResult(plan.removed_units > 0, info)
