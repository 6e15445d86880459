"""Structure passes: components, flow adapters, and the channel-dependency analysis."""

from __future__ import annotations

from ...analysis.channels import analyze_channels
from ...analysis.components import POLICIES, find_components, find_flows
from ...analysis.model import ChannelAnalysis
from ...ir.graph import infer_shapes
from ...ir.symbolic import could_refine, shape_bound
from ...normalize.cleanup import constant_reshape_targets
from ...options import Option, flag, number, text, texts
from ...rewrite.flows import drop_identity_gathers, insert_flow_adapters
from ..base import Context, Pass, PassResult


class FindComponents(Pass):
    name = "components"
    description = "Partition the nodes into components (name scopes, a TOML map) and find flows."
    requires = ("graph",)
    provides = ("components", "flows")

    options = (
        Option("spec", "auto", "where components come from: 'auto' (node name scopes), "
               "'none' (one component) or the path of a TOML map", parse=text,
               metavar="auto|none|FILE", type_name="str"),
        Option("depth", None, "name-scope depth that defines components with 'auto' (default: "
               "the first depth giving two or more)", parse=number(1, integer=True),
               public="scope_depth", metavar="N", type_name="int"),
        Option("policy", "own", "tensors crossing components: 'own' gives each side its own "
               "channels, cut only where both agree; 'freeze' keeps them; 'couple' groups "
               "across components like a plain dependency graph", choices=POLICIES,
               public="flow_policy"),
    )

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        ctx.components = find_components(graph, self.spec, self.depth, self.policy)
        ctx.flows = find_flows(graph, ctx.components)
        return PassResult(False, {"components": len(ctx.components.names),
                                  "flows": len(ctx.flows)})


class InsertFlowAdapters(Pass):
    name = "flow-adapters"
    description = "Give components their own channels where an 'own' flow crosses into them."
    requires = ("graph", "components")
    uses = ("flows",)

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        if ctx.components is None or not any(f.policy == "own" for f in ctx.flows):
            return PassResult(False)
        plain = analyze_channels(graph)
        n = insert_flow_adapters(graph, ctx.components, ctx.flows, plain)
        return PassResult(n > 0, {"adapters": n})


class DropAdapters(Pass):
    name = "drop-adapters"
    description = "Remove flow adapters that ended up selecting every channel."
    requires = ("graph",)

    def run(self, ctx: Context) -> PassResult:
        return PassResult(drop_identity_gathers(ctx.require("graph", self.name)) > 0)


REFINE_ROUNDS = 4


def analyze_graph(graph, **options) -> ChannelAnalysis:
    """``analyze_channels``; when a shape froze channels and ONNX's inference left dimensions
    open around the ops that decide, the graph's shapes are refined by symbolic inference (in
    place), reshape targets the refined shapes resolve become constants (the same values for
    every input size: ``normalize.cleanup.constant_reshape_targets``), and the analysis runs
    again."""
    analysis = analyze_channels(graph, **options)
    if shape_bound(analysis) and could_refine(graph):
        for _ in range(REFINE_ROUNDS):  # refined shapes resolve reshape targets computed from
            infer_shapes(graph, symbolic=True)  # them (tf2onnx's ReduceProd of sizes), which
            if not constant_reshape_targets(graph):  # tells the shapes after them
                break
        analysis = analyze_channels(graph, **options)
    return analysis


class AnalyzeChannels(Pass):
    name = "analyze"
    description = "Find coupled channel groups with the op-rule registry."
    requires = ("graph",)
    provides = ("analysis",)
    uses = ("components", "flows")

    options = (
        Option("exclude", (), "freeze every channel touching nodes whose name matches this "
               "glob (repeatable)", parse=texts, public="exclude", metavar="GLOB",
               kind="append", type_name="list"),
        Option("kv_cache", False, "let attention heads leave a decoder's key/value cache: paired "
               "past_key_values.N.key|value inputs and present.N.key|value outputs lose the "
               "pruned heads on their head axis alike (an interface change: the pruned model "
               "takes and gives a cache of its new shapes)", parse=flag,
               public="prune_kv_cache", kind="switch", type_name="bool"),
    )

    def run(self, ctx: Context) -> PassResult:
        freeze, comp_of = {}, None
        if ctx.components is not None:
            comp_of = ctx.components.of_node
            freeze = {f.tensor: f"flow {f.tensor} ({f.src} -> {', '.join(f.dst)}) is frozen"
                      for f in ctx.flows if f.policy == "freeze"}
        ctx.analysis = analyze_graph(ctx.require("graph", self.name), exclude=self.exclude,
                                     freeze=freeze, component_of=comp_of,
                                     kv_cache=self.kv_cache)
        groups = ctx.analysis.groups
        return PassResult(False, {
            "groups": len(groups), "prunable": len(ctx.analysis.prunable_groups()),
        })
