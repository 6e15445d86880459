"""What a prune run produced, from its context: the result object, the JSON object the command
line prints (``prune --json``), and what a report adds to that object."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnx_graphsurgeon as gs

from ..analysis.model import ChannelAnalysis
from ..analysis.size import graph_params, is_param, macs_at, params_by_type
from ..ir.graph import export_model
from ..ir.io import weight_bytes
from ..ir.weights import proto
from ..select.uniform import PrunePlan
from ..verify.checks import VerifyReport
from .base import Context
from .core import peak_memory, total_time
from .support.stages import summary as stage_summary


@dataclass(frozen=True)
class PruneResult:
    """What a run produced. ``model`` (and ``float_model``) are exported from the pruned graph
    when first read: a run that only writes its file holds no second copy of the weights."""

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
    params_by_op: dict | None = None  # op type -> [params before, after] (top-level nodes)
    report: Path | None = None  # the report.html written (--report)
    params_by_type_before: dict[str, int] | None = None  # parameters per element type
    params_by_type_after: dict[str, int] | None = None
    quantization: dict | None = None  # what quantize did: type, settings, metric float/quantized
    classes: dict | None = None  # what keep_classes did: output, classes kept, params removed
    tokens: dict | None = None  # what keep_tokens did: input, tokens kept, params removed
    factors: list | None = None  # factorize: per matrix its shape, rank kept, left factorized
    rotated: list | None = None  # rotate: per linear bottleneck its tensor and width
    calibration: str | None = None  # what --calib read, when not an .npz (images, text, ...)
    depth: dict | None = None  # the residual blocks removed (remove_blocks), with their scores
    _graphs: tuple = field(default=(None, None, None, None), repr=False, compare=False)

    @functools.cached_property
    def model(self) -> onnx.ModelProto:
        graph, _, ir, like = self._graphs
        return export_model(graph, ir, like=like)

    @functools.cached_property
    def float_model(self) -> onnx.ModelProto | None:
        """The verified float model before quantization (None: not quantized)."""
        _, graph, ir, like = self._graphs
        return None if graph is None else export_model(graph, ir, like=like)


def result_of(ctx: Context, params_before: int | None = None,
              macs_before: int | None = None) -> PruneResult:
    """A PruneResult from a pipeline's context (sizes before: of the graph before removal and
    before classes or tokens were trimmed)."""
    before = next((g for g in (ctx.origin, ctx.reference) if g is not None), ctx.graph)
    sets = ctx.input_sets
    return PruneResult(
        _graphs=(ctx.graph, ctx.float_graph, ctx.source_ir and min(ctx.source_ir, 13),
                 ctx.source),
        analysis=ctx.analysis, plan=ctx.plan, verification=ctx.verification,
        params_before=graph_params(before) if params_before is None else params_before,
        params_after=graph_params(ctx.graph),
        macs_before=macs_at(before, sets[0] if sets else None) if macs_before is None
        else macs_before,
        macs_after=next((res.info["macs"] for name, res in ctx.log  # both branches, as before
                         if name == "close-branches" and "macs" in res.info),
                        None) or macs_at(ctx.graph, sets[0] if sets else None),
        timings=total_time(ctx), output=ctx.output_path, quality=ctx.quality,
        selection=ctx.select_info, recovery=ctx.recovery or None,
        params_input=ctx.source_params, stages=stage_summary(ctx), memory=memory_of(ctx),
        params_by_op=params_by_op(before, ctx.graph), report=ctx.report_path,
        params_by_type_before=params_by_type(before),
        params_by_type_after=params_by_type(ctx.graph), quantization=ctx.quantization,
        classes=ctx.classes, tokens=ctx.tokens, factors=ctx.factorization, depth=depth_summary(ctx),
        rotated=next(([{"tensor": t, "width": w} for t, w in zip(
            res.info["tensors"], res.info["widths"], strict=True)] for name, res in ctx.log
            if name == "rotate" and res.info.get("rotated")), None),
        calibration=next((res.info.get("source") for name, res in ctx.log
                          if name == "calibrate" and res.info.get("source")), None),
    )


def depth_summary(ctx: Context) -> dict | None:
    """The blocks removed and the scores that chose them (None: no depth pass)."""
    if ctx.depth is None:
        return None
    from .passes.depth import block_json

    scores = ctx.depth["scores"]
    return {"removable": len(ctx.depth["removable"]), "scored_by": ctx.depth.get("by"),
            "in_plan": "units" in ctx.depth,  # chosen by the search with the channels
            "scored_on": ctx.depth.get("data"),
            "removed": [block_json(b, scores.get(b.name)) for b in ctx.depth["removed"]]}


def memory_of(ctx: Context) -> dict | None:
    """Peak RSS of the run (bytes), per pass, and next to the input model's weights."""
    per_pass = peak_memory(ctx)
    start = per_pass.pop("start", None)
    peaks = [p for p in per_pass.values() if p is not None]
    if not peaks:
        return None
    peak = max(peaks)
    weights = weight_bytes(proto(ctx.source)) if ctx.source is not None else None
    added = peak - start if start is not None else None
    return {"peak_rss": peak, "start_rss": start, "model_weight_bytes": weights,
            "peak_over_weights": peak / weights if weights else None,
            "added_over_weights": added / weights if weights and added is not None else None,
            "per_pass": per_pass}


def _params_per_op(graph: gs.Graph) -> dict[str, int]:
    """Parameters by the op type of the first top-level node that reads them; what sits only
    inside If/Loop/Scan bodies is counted as "subgraphs"."""
    out: dict[str, int] = {}
    seen: set[str] = set()
    for node in graph.nodes:
        for t in node.inputs:
            if t.name not in seen and is_param(t):
                seen.add(t.name)
                out[node.op] = out.get(node.op, 0) + int(t.values.size)
    rest = graph_params(graph) - sum(out.values())
    if rest > 0:
        out["subgraphs"] = rest
    return out


def params_by_op(before: gs.Graph | None, after: gs.Graph | None) -> dict[str, list[int]] | None:
    """Op type -> [parameters before, after], largest first."""
    if before is None or after is None:
        return None
    b, a = _params_per_op(before), _params_per_op(after)
    ops = sorted(set(b) | set(a), key=lambda op: (-b.get(op, 0), op))
    return {op: [b.get(op, 0), a.get(op, 0)] for op in ops}


def prune_json(r: PruneResult, model: str | None) -> dict[str, Any]:
    """The object ``prune --json`` prints (without its ``warnings``)."""
    v = r.verification
    return {
        "input": model,
        "output": str(r.output) if r.output else None,
        "params_input": r.params_input,
        "params_before": r.params_before,
        "params_after": r.params_after,
        "params_by_type_before": r.params_by_type_before,
        "params_by_type_after": r.params_by_type_after,
        "macs_before": r.macs_before,
        "macs_after": r.macs_after,
        "removed_channels": r.plan.removed_units - (
            len(r.depth["removed"]) if r.depth and r.depth["in_plan"] else 0),
        "groups": [
            {"id": gid, "before": b, "after": a} for gid, (b, a) in sorted(r.plan.widths.items())
        ],
        "verification": None if v is None else {
            "passed": v.passed, "checker": v.checker, "providers": list(v.providers),
            "oracle_max_abs_diff": v.max_abs_diff, "oracle_max_rel_diff": v.max_rel_diff,
            "normalize_rel_diff": v.normalize_rel_diff, "messages": list(v.messages),
            "oracle": v.oracle, "shapes": list(v.shapes), "deciding": v.deciding,
        },
        "quality": r.quality,
        "stages": r.stages,
        "selection": _plain(r.selection),
        "recovery": r.recovery,
        "quantization": r.quantization,
        "classes": r.classes,
        "tokens": r.tokens,
        "factors": r.factors,
        "rotated": r.rotated,
        "calibration": r.calibration,
        "depth": r.depth,
        "latency": (r.selection or {}).get("latency"),
        "timings": r.timings,
        "memory": r.memory,
    }


def _plain(info):
    if info is None:
        return None
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in info.items()}


def report_data(r: PruneResult, model: str | None, *, warnings: Iterable[str] = (),
                command: str | None = None, bench: dict | None = None) -> dict[str, Any]:
    """What a report shows: the ``prune --json`` object (with ``warnings``, and ``bench``
    when measured), the command that reproduces the run, and under ``report`` what the JSON
    does not say: each group's component and layers, and parameters by op type."""
    data = prune_json(r, model)
    if bench is not None:
        data["bench"] = bench
    data["warnings"] = list(warnings)
    data["command"] = command
    data["report"] = {
        "groups": [{"id": g.id, "component": g.component, "layers": list(g.layers),
                    "params": g.n_params, "frozen": g.frozen, "reason": g.reason}
                   for g in r.analysis.groups],
        "params_by_op": r.params_by_op,
    }
    return data
