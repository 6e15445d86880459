"""The Python API: ``analyze`` and ``prune``. The CLI is a thin layer over these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from .analysis.model import ChannelAnalysis
from .graph import export_model
from .metrics import graph_macs, graph_params
from .passes import (
    AnalyzeChannels,
    Cleanup,
    LoadModel,
    Normalize,
    RemoveChannels,
    ScoreMagnitude,
    SelectUniform,
    UseModel,
    Verify,
    WriteModel,
)
from .pipeline import Context, Pass, Pipeline, total_time
from .select.uniform import PrunePlan
from .verify import VerifyReport

ModelLike = str | Path | onnx.ModelProto


def _entry(model: ModelLike) -> Pass:
    return UseModel(model) if isinstance(model, onnx.ModelProto) else LoadModel(model)


@dataclass(frozen=True)
class Analysis:
    """The channel analysis of a normalized model, with its size."""

    channels: ChannelAnalysis
    params: int
    macs: int
    nodes: int
    timings: dict[str, float]


def analyze(model: ModelLike, exclude: Sequence[str] = (),
            progress: Callable[[str], None] | None = None) -> Analysis:
    """Normalize ``model`` and find its coupled channel groups.

    >>> result = analyze("model.onnx")                       # doctest: +SKIP
    >>> [g.channels for g in result.channels.prunable_groups()]  # doctest: +SKIP
    """
    ctx = Context(progress=progress)
    Pipeline([_entry(model), Normalize(), AnalyzeChannels(exclude)])(ctx)
    return Analysis(ctx.analysis, graph_params(ctx.graph), graph_macs(ctx.graph),
                    len(ctx.graph.nodes), total_time(ctx))


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


def prune(
    model: ModelLike,
    output: str | Path | None = None,
    *,
    ratio: float = 0.5,
    criterion: str = "l2",
    round_to: int = 1,
    min_width: int = 1,
    exclude: Sequence[str] = (),
    providers: Sequence[str] = ("CPUExecutionProvider",),
    force: bool = False,
    verify: bool = True,
    input_shapes: dict[str, Sequence[int]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> PruneResult:
    """Prune ``ratio`` of the channels of every prunable group, verify, and write to ``output``.

    >>> r = prune("model.onnx", "small.onnx", ratio=0.5)   # doctest: +SKIP
    >>> r.params_after / r.params_before                     # doctest: +SKIP
    """
    ctx = Context(progress=progress)
    Pipeline([_entry(model), Normalize(), AnalyzeChannels(exclude)])(ctx)
    params_before, macs_before = graph_params(ctx.graph), graph_macs(ctx.graph)
    passes: list[Pass] = [
        ScoreMagnitude(criterion),
        SelectUniform(ratio, round_to, min_width),
        RemoveChannels(),
        Cleanup(),
    ]
    if verify:
        passes.append(Verify(providers, shapes=input_shapes))
    if output is not None:
        passes.append(WriteModel(output, force=force))
    Pipeline(passes)(ctx)
    return PruneResult(
        model=export_model(ctx.graph, ctx.source_ir and min(ctx.source_ir, 13)),
        analysis=ctx.analysis, plan=ctx.plan, verification=ctx.verification,
        params_before=params_before, params_after=graph_params(ctx.graph),
        macs_before=macs_before, macs_after=graph_macs(ctx.graph),
        timings=total_time(ctx), output=ctx.output_path,
    )
