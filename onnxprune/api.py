"""The Python API: ``analyze`` and ``prune``. The CLI is a thin layer over these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from .analysis.blocks import Block, find_blocks
from .analysis.branches import branch_inputs, opened_inputs
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
from .errors import collect_warnings
from .pipeline import Context, Pipeline, RunConfig, total_time
from .pipeline.build import analysis_front, prune_pipeline, public_options
from .pipeline.result import PruneResult, memory_of, result_of
from .rewrite.classes import class_heads
from .rewrite.tokens import token_inputs

__all__ = ["Analysis", "GroupStats", "PruneResult", "analyze", "component_sizes", "memory_of",
           "prune", "result_of"]

ModelLike = str | Path | onnx.ModelProto


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
    class_heads: tuple[dict, ...] = ()  # outputs whose classes --keep-classes could cut
    token_inputs: tuple[dict, ...] = ()  # inputs whose tokens --keep-tokens could cut
    blocks: tuple[Block, ...] = ()  # residual blocks (--remove-blocks), removable or why not
    influence: dict[str, float] = field(default_factory=dict)  # block -> influence (with data)
    branch_inputs: dict[str, list[str]] = field(default_factory=dict)  # If -> inputs deciding it
    opened: dict[str, list[str]] = field(default_factory=dict)  # the same, Ifs pruned branchwise

    @property
    def stats(self) -> GroupStats:
        return GroupStats.of(self.channels)


def analyze(model: ModelLike, exclude: Sequence[str] = (), *, components: str = "none",
            scope_depth: int | None = None, flow_policy: str = "own",
            input_values=None, input_shapes=None, prune_kv_cache: bool = False,
            calib: str | Path | dict | None = None,
            progress: Callable[[str], None] | None = None) -> Analysis:
    """Normalize ``model`` and find its coupled channel groups.

    ``components``: "none" (one component), "auto" (name scopes) or a TOML map's path;
    ``flow_policy``: how tensors crossing components are treated (own | freeze | couple);
    ``prune_kv_cache``: heads may leave a decoder's past/present cache (analysis.cache);
    ``calib``: calibration data (a path, ``random:N``, arrays, or the calibrate pass's options
    as a dict with ``path``/``random``/``arrays``) on which each removable block's influence
    is measured (``Analysis.influence``).

    >>> result = analyze("agent.onnx", components="auto")      # doctest: +SKIP
    >>> [(g.component, g.channels) for g in result.channels.prunable_groups()]  # doctest: +SKIP
    """
    ctx, plain = analysis_front(model, exclude, components, scope_depth, flow_policy, progress,
                        check=False, config=RunConfig.of(input_values=input_values,
                                                         input_shapes=input_shapes),
                        kv_cache=prune_kv_cache)
    comp_stats = None
    if ctx.components is not None:
        comp_stats = component_sizes(ctx.graph, ctx.components, ctx.analysis)
    blocks = tuple(find_blocks(ctx.graph, ctx.analysis.node_macs, cache=prune_kv_cache))
    influence = _influence(ctx, blocks, calib) if calib is not None else {}
    return Analysis(ctx.analysis, graph_params(ctx.graph),
                    macs_at(ctx.graph, ctx.input_sets[0] if ctx.input_sets else None),
                    len(ctx.graph.nodes), total_time(ctx), ctx.components,
                    tuple(ctx.flows or ()), comp_stats,
                    GroupStats.of(plain) if plain is not None else None, ctx.graph,
                    subgraph_params(ctx.graph), params_by_type(ctx.graph),
                    tuple(class_heads(ctx.graph)), tuple(token_inputs(ctx.graph)), blocks,
                    influence, branch_inputs(ctx.graph), opened_inputs(ctx.graph, ctx.branches))


def _influence(ctx: Context, blocks: tuple[Block, ...], calib) -> dict[str, float]:
    """Block Influence of every removable block on the calibration data."""
    from .pipeline.passes import Calibrate
    from .scoring.blocks import block_influence

    opts = dict(calib) if isinstance(calib, dict) and any(
        k in calib for k in ("path", "random", "arrays")) else (
        {"arrays": calib} if isinstance(calib, dict) else {"path": calib})
    Calibrate(**{**opts, "holdout": 0.0, "probe": "off"})(ctx)
    removable = [b for b in blocks if b.removable]
    outputs = {n.name: n.outputs[0].name for n in ctx.graph.nodes
               if n.name in {b.name for b in removable}}
    inputs = {t.name for t in ctx.graph.inputs}
    scores = block_influence(ctx.skeleton(), removable, outputs,
                             {k: v for k, v in ctx.calib.items() if k in inputs},
                             ctx.analysis.slots)
    return {b.name: float(s) for b, s in zip(removable, scores, strict=True)}


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


def prune(model: ModelLike, output: str | Path | None = None, *,
          progress: Callable[[str], None] | None = None, **options: Any) -> PruneResult:
    """Prune, verify, and write to ``output`` (when given); the options are those of
    ``onnxprune prune`` (listed below), as keywords: ``ratio=0.5``, ``strategy="soft"``,
    ``calib="data.npz"`` or ``calib={"input": images}``, ``providers=["cpu"]``, ...

    >>> r = prune("model.onnx", "small.onnx", ratio=0.5)   # doctest: +SKIP
    >>> r = prune("ae.onnx", strategy="soft", target_params=0.6, calib="digits.npz",
    ...           metric="psnr")                            # doctest: +SKIP
    """
    said: list[str] = []
    with collect_warnings(said):  # those of building the pipeline too, for a report
        passes, config = prune_pipeline(model, output, options)
        ctx = Context(config=config, progress=progress, warnings=said)
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


