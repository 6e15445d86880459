"""The Python API: ``analyze`` and ``prune``. The CLI is a thin layer over these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from .analysis.channels import analyze_channels
from .analysis.components import Components, Flow
from .analysis.model import ChannelAnalysis
from .analysis.size import (
    graph_params,
    is_param,
    macs_at,
    node_macs,
    params_by_type,
    subgraph_params,
)
from .ir.graph import export_model
from .ir.io import weight_bytes
from .pipeline import Context, Pass, Pipeline, RunConfig, peak_memory, total_time
from .pipeline.build import prune_pipeline, public_options
from .pipeline.stages import summary as stage_summary
from .pipeline.passes import (
    AnalyzeChannels,
    FindComponents,
    InsertFlowAdapters,
    LoadModel,
    Normalize,
    UseModel,
)
from .select.uniform import PrunePlan
from .verify.checks import VerifyReport

ModelLike = str | Path | onnx.ModelProto


def _entry(model: ModelLike) -> Pass:
    return UseModel(model) if isinstance(model, onnx.ModelProto) else LoadModel(model)


@dataclass(frozen=True)
class GroupStats:
    """Sizes of the prunable groups: in layers (nodes whose weights a group slices) and params."""

    groups: int
    prunable: int
    largest_layers: int
    mean_layers: float
    largest_params: int
    mean_params: float

    @classmethod
    def of(cls, analysis: ChannelAnalysis) -> GroupStats:
        groups = [g for g in analysis.groups if not g.frozen]
        layers = [len(g.layers) for g in groups] or [0]
        params = [g.n_params for g in groups] or [0]
        return cls(len(analysis.groups), len(groups), max(layers), sum(layers) / len(layers),
                   max(params), sum(params) / len(params))


@dataclass(frozen=True)
class Analysis:
    """The channel analysis of a normalized model, with its size and components."""

    channels: ChannelAnalysis
    params: int
    macs: int
    nodes: int
    timings: dict[str, float]
    components: Components | None = None
    flows: tuple[Flow, ...] = ()
    component_stats: dict[str, dict[str, int]] | None = None  # name -> nodes/params/macs
    plain: GroupStats | None = None  # the same graph without components, for comparison
    graph: object = None  # the normalized gs.Graph the analysis describes
    subgraph_params: int = 0  # parameters inside If/Loop/Scan bodies (not analyzed)
    params_by_type: dict[str, int] | None = None  # parameters per element type (int8, ...)

    @property
    def stats(self) -> GroupStats:
        return GroupStats.of(self.channels)


def _front(model: ModelLike, exclude: Sequence[str], components: str, scope_depth: int | None,
           flow_policy: str, progress, check: bool = True, config: RunConfig | None = None
           ) -> tuple[Context, ChannelAnalysis | None]:
    """Load, normalize, find components and adapters, analyze. Returns the context and the
    analysis of the same graph with plain coupling (when components are used)."""
    ctx = Context(config=config or RunConfig(), progress=progress)
    Pipeline([_entry(model), Normalize(check=check)])(ctx)
    plain = None
    if components != "none":
        FindComponents(components, scope_depth, flow_policy)(ctx)
        plain = analyze_channels(ctx.graph, exclude=exclude, component_of=ctx.components.of_node)
        InsertFlowAdapters()(ctx)
    AnalyzeChannels(exclude)(ctx)
    return ctx, plain


def analyze(model: ModelLike, exclude: Sequence[str] = (), *, components: str = "none",
            scope_depth: int | None = None, flow_policy: str = "own",
            input_values=None, input_shapes=None,
            progress: Callable[[str], None] | None = None) -> Analysis:
    """Normalize ``model`` and find its coupled channel groups.

    ``components``: "none" (one component), "auto" (name scopes) or a TOML map's path;
    ``flow_policy``: how tensors crossing components are treated (own | freeze | couple).

    >>> result = analyze("agent.onnx", components="auto")      # doctest: +SKIP
    >>> [(g.component, g.channels) for g in result.channels.prunable_groups()]  # doctest: +SKIP
    """
    ctx, plain = _front(model, exclude, components, scope_depth, flow_policy, progress,
                        check=False, config=RunConfig.of(input_values=input_values,
                                                         input_shapes=input_shapes))
    comp_stats = None
    if ctx.components is not None:
        comp_stats = component_sizes(ctx.graph, ctx.components, ctx.analysis)
    return Analysis(ctx.analysis, graph_params(ctx.graph),
                    macs_at(ctx.graph, ctx.input_sets[0] if ctx.input_sets else None),
                    len(ctx.graph.nodes), total_time(ctx), ctx.components,
                    tuple(ctx.flows or ()), comp_stats,
                    GroupStats.of(plain) if plain is not None else None, ctx.graph,
                    subgraph_params(ctx.graph), params_by_type(ctx.graph))


def component_sizes(graph, components: Components, analysis: ChannelAnalysis) -> dict:
    out = {name: {"nodes": 0, "params": 0, "macs": 0, "groups": 0} for name in components.names}
    seen: set[str] = set()
    for node in graph.nodes:
        row = out.setdefault(components.of_node.get(node.name, "other"),
                             {"nodes": 0, "params": 0, "macs": 0, "groups": 0})
        row["nodes"] += 1
        row["macs"] += node_macs(node)
        for t in node.inputs:
            if is_param(t) and t.name not in seen:
                seen.add(t.name)
                row["params"] += int(t.values.size)
    for g in analysis.groups:
        for part in (g.component or "").split("+"):
            if part in out:
                out[part]["groups"] += 1
    return out


@dataclass(frozen=True)
class PruneResult:
    model: onnx.ModelProto
    analysis: ChannelAnalysis
    plan: PrunePlan
    verification: VerifyReport | None
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    timings: dict[str, float]
    output: Path | None
    quality: dict | None = None  # application metric before/after on the calibration data
    selection: dict | None = None  # what the strategy learned (target, steps, coefficients)
    recovery: dict | None = None  # what compensation / distillation did
    params_input: int | None = None  # the input file's parameters (before normalization)
    stages: dict | None = None  # quality after every stage, on calibration and held-out data
    memory: dict | None = None  # peak resident memory (bytes) overall and per pass
    params_by_type_before: dict[str, int] | None = None  # parameters per element type
    params_by_type_after: dict[str, int] | None = None
    quantization: dict | None = None  # what quantize="int8" did: settings, metric float/int8
    float_model: onnx.ModelProto | None = None  # the verified float model before quantization


def prune(model: ModelLike, output: str | Path | None = None, *,
          progress: Callable[[str], None] | None = None, **options: Any) -> PruneResult:
    """Prune, verify, and write to ``output`` (when given); the options are those of
    ``onnxprune prune`` (listed below), as keywords: ``ratio=0.5``, ``strategy="soft"``,
    ``calib="data.npz"`` or ``calib={"input": images}``, ``providers=["cpu"]``, ...

    >>> r = prune("model.onnx", "small.onnx", ratio=0.5)   # doctest: +SKIP
    >>> r = prune("ae.onnx", strategy="soft", target_params=0.6, calib="digits.npz",
    ...           metric="psnr")                            # doctest: +SKIP
    """
    passes, config = prune_pipeline(model, output, options)
    ctx = Context(config=config, progress=progress)
    Pipeline(passes)(ctx)
    return result_of(ctx)


def _options_doc() -> str:
    lines = ["", "Options:", ""]
    for public, (owner, o) in sorted(public_options().items()):
        default = "" if o.required else f" = {o.default!r}"
        where = "" if owner in ("run", "prune") else f" [{owner}.{o.name}]"
        lines.append(f"    {public}{default}{where}: {o.help}")
    return "\n".join(lines)


prune.__doc__ = (prune.__doc__ or "") + _options_doc()


def result_of(ctx: Context, params_before: int | None = None,
              macs_before: int | None = None) -> PruneResult:
    """A PruneResult from a pipeline's context (sizes before: of the graph before removal)."""
    before = ctx.reference if ctx.reference is not None else ctx.graph
    sets = ctx.input_sets
    return PruneResult(
        model=export_model(ctx.graph, ctx.source_ir and min(ctx.source_ir, 13), like=ctx.source),
        analysis=ctx.analysis, plan=ctx.plan, verification=ctx.verification,
        params_before=graph_params(before) if params_before is None else params_before,
        params_after=graph_params(ctx.graph),
        macs_before=macs_at(before, sets[0] if sets else None) if macs_before is None
        else macs_before,
        macs_after=macs_at(ctx.graph, sets[0] if sets else None),
        timings=total_time(ctx), output=ctx.output_path, quality=ctx.quality,
        selection=ctx.select_info, recovery=ctx.recovery or None,
        params_input=ctx.source_params, stages=stage_summary(ctx), memory=memory_of(ctx),
        params_by_type_before=params_by_type(before),
        params_by_type_after=params_by_type(ctx.graph), quantization=ctx.quantization,
        float_model=None if ctx.float_graph is None else export_model(
            ctx.float_graph, ctx.source_ir and min(ctx.source_ir, 13), like=ctx.source),
    )


def memory_of(ctx: Context) -> dict | None:
    """Peak RSS of the run (bytes), per pass, and next to the input model's weights."""
    per_pass = peak_memory(ctx)
    start = per_pass.pop("start", None)
    peaks = [p for p in per_pass.values() if p is not None]
    if not peaks:
        return None
    peak = max(peaks)
    weights = weight_bytes(ctx.source) if ctx.source is not None else None
    added = peak - start if start is not None else None
    return {"peak_rss": peak, "start_rss": start, "model_weight_bytes": weights,
            "peak_over_weights": peak / weights if weights else None,
            "added_over_weights": added / weights if weights and added is not None else None,
            "per_pass": per_pass}
