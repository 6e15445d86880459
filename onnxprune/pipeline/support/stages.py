"""Quality per stage: the application metric of the model as it stands after each stage of a
run (unpruned, classes kept, pruned, compensated, distilled), measured by running the real
model on the calibration samples the search used and on the held-out share it never saw,
always against the unpruned model with all its classes.

A recovery stage that makes held-out quality worse is undone (``keep_better``): the model
before it is kept, and a warning says so. The held-out share decides (the calibration data
when there is none), and so does the random-token probe when the run has one
(``pipeline/support/probe.py``): a stage must not make either worse.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import warn
from ...figures import distinct
from ...ir import io
from ...ir.arrays import Calibration
from ...ir.runtime import run_batched, session
from ...ir.weights import proto
from ...search.memory import rows_for, search_budget
from ...search.quality import Metric, get_metric
from ...verify.checks import cut_arrays, cut_outputs
from ..base import Context
from . import coverage

# the data sets a stage is measured on, in report order, with their names in reports
SETS = {"calib": "calibration", "heldout": "held-out", "probe": "random-token probe"}


def _metric(ctx: Context) -> Metric:
    return ctx.metric or get_metric("cosine")


def _inputs(model, data: Calibration) -> Calibration:
    names = {i.name for i in proto(model).graph.input}
    return Calibration({k: v for k, v in data.items() if k in names},
                       {k: a for k, a in data.axes.items() if k in names})


def _outputs(ctx: Context, graph, data: Calibration, optimized: bool = False
             ) -> list[np.ndarray]:
    model = ctx.skeleton(graph)  # the session reads the graph's arrays
    model.model.ir_version = io.runtime_ir_version(model.model, ctx.source_ir)
    feeds = _inputs(model, data)
    sess = session(model, [ctx.config.providers[0]], optimized=optimized)
    rows = rows_for(model, feeds, feeds.axes, search_budget())
    return run_batched(sess, feeds, axes=feeds.axes, max_rows=rows)


def outputs(ctx: Context, graph, data: Calibration, optimized: bool = False
            ) -> list[np.ndarray]:
    """The outputs of ``graph`` on ``data`` (on the run's first provider)."""
    return _outputs(ctx, graph, data, optimized)


def _data(ctx: Context) -> dict[str, Calibration]:
    out = {}
    if ctx.calib is not None:
        out["calib"] = ctx.calib
    if ctx.heldout is not None:
        out["heldout"] = ctx.heldout
    if probe(ctx) is not None:
        out["probe"] = ctx.probe  # pipeline/support/probe.py
    return out


def probe(ctx: Context):
    """The random-token probe when the run measures it (a token model, and a metric that
    compares with the original), else None."""
    return ctx.probe if ctx.probe is not None and _metric(ctx).against_reference else None


def measurable(ctx: Context) -> bool:
    """Stages are measured when there is data to measure on (not for metrics that run the
    model themselves: their value is the search's own)."""
    return bool(_data(ctx)) and not _metric(ctx).on_model


def _original(ctx: Context):
    """The model quality is measured against: the normalized input, before any removal."""
    for graph in (ctx.origin, ctx.reference):
        if graph is not None:
            return graph
    return ctx.graph


def reads(ctx: Context) -> list[str] | None:
    """The outputs the metric reads, by name: all (None) unless a decoder's key/value cache
    may leave with its blocks (``--prune-kv-cache`` with depth); then the others, in every
    candidate and stage alike (which cache pairs remain differs from cut to cut)."""
    gone = {present for b in ((ctx.depth or {}).get("removable") or ())
            for _, present in b.cache}
    if not gone:
        return None
    return [o.name for o in _original(ctx).outputs if o.name not in gone]


def reading(outputs: list[np.ndarray], names: list[str], read: list[str] | None
            ) -> list[np.ndarray]:
    """``outputs`` (named ``names``) that the metric reads (``reads``)."""
    if read is None:
        return outputs
    return [o for o, n in zip(outputs, names, strict=True) if n in set(read)]


def _references(ctx: Context) -> dict[str, list[np.ndarray]]:
    """The unpruned model's outputs on each data set (computed once per run)."""
    refs = ctx.resources.references
    for name, data in _data(ctx).items():
        if name not in refs:
            refs[name] = _outputs(ctx, _original(ctx), data)
    return refs


def held_outputs(ctx: Context, graph) -> dict[str, np.ndarray] | None:
    """``graph``'s outputs on the calibration data by name, when the run holds them already:
    ``graph`` is the model stages compare against and its outputs were measured on the CPU,
    as a teacher's are (None otherwise)."""
    ref = ctx.resources.references.get("calib")
    if ref is None or graph is not _original(ctx) or \
            ctx.config.providers[0] != "CPUExecutionProvider":
        return None
    return dict(zip((o.name for o in graph.outputs), ref, strict=True))


def measure(ctx: Context, stage: str, graph=None, optimized: bool = False
            ) -> dict[str, Any] | None:
    """Record the metric of ``graph`` (default: the working graph) after ``stage``, on every
    data set; the unpruned model's figures come first. None when nothing is measurable.
    ``optimized``: run it with onnxruntime's optimizations on (how a quantized model runs
    deployed, its integer kernels fused), not in reference arithmetic."""
    if not measurable(ctx):
        return None
    metric, refs = _metric(ctx), _references(ctx)
    of, read = [o.name for o in _original(ctx).outputs], reads(ctx)
    if not ctx.stages:
        if "calib" in refs:
            coverage.check(ctx, reading(refs["calib"], of, read), reading(of, of, read))
        ctx.stages.append({"stage": "unpruned", **{
            name: metric(reading(refs[name], of, read), data, reading(refs[name], of, read))
            for name, data in _data(ctx).items()}})
        trims = [k for k in ("classes", "tokens") if getattr(ctx, k) is not None]
        if trims and ctx.reference is not None:  # the trim's own cost (factors cost nothing)
            ctx.stages.append({"stage": "+".join(trims), **{
                name: metric(_outputs(ctx, ctx.reference, data), data, refs[name])
                for name, data in _data(ctx).items()}})
    row: dict[str, Any] = {"stage": stage}
    cuts = ctx.interface or {}  # an opened cache: the pruned model reads/writes kept heads only
    graph = ctx.graph if graph is None else graph
    names = [o.name for o in graph.outputs]  # a cache pair may have left with its block
    for name, data in _data(ctx).items():
        fed = Calibration(cut_arrays(dict(data), cuts), data.axes) if cuts else data
        outs = _outputs(ctx, graph, fed, optimized)
        ref = refs[name] if names == of and not cuts else cut_outputs(refs[name], names, cuts, of)
        row[name] = metric(reading(outs, names, read), fed, reading(ref, names, read))
    ctx.stages.append(row)
    return row


def current(ctx: Context) -> dict[str, Any] | None:
    """The figures of the model as it stands (measured as 'pruned' if no stage was yet)."""
    if not measurable(ctx):
        return None
    if len(ctx.stages) < 2:
        return measure(ctx, "pruned")
    return [row for row in ctx.stages if row.get("kept") is not False][-1]  # not undone


def _deciding(row: dict[str, Any]) -> list[str]:
    """The data sets whose figures decide whether a stage is kept."""
    return ["heldout" if "heldout" in row else "calib", *(["probe"] if "probe" in row else [])]


def keep_better(ctx: Context, stage: str, before: dict[str, Any] | None, snapshot) -> bool:
    """Measure the model after recovery ``stage``; if it scores worse than ``before`` on the
    held-out data (the calibration data without a held-out share), put ``snapshot`` (the graph
    before the stage) back and say so. Returns whether the stage's result was kept; the stage's row names the
    data sets it was worse on (``"worse"``)."""
    after = measure(ctx, stage)
    if after is None or before is None:
        return True
    metric = _metric(ctx)
    worse = [k for k in _deciding(before) if k in after
             and metric.utility(after[k]) < metric.utility(before[k])]
    if not worse:
        after["kept"] = True
        return True
    after["kept"], after["worse"] = False, worse
    ctx.graph = snapshot
    what = " and ".join("on the {} data worse ({} -> {})".format(
        SETS[k], *distinct([float(before[k]), float(after[k])])) for k in worse)
    warn(f"{stage} made {metric.name} {what}; kept the model before {stage}")
    return False


def summary(ctx: Context) -> dict[str, Any] | None:
    """What the report shows: the metric, sample counts and every stage's figures."""
    if not ctx.stages:
        return None
    data = _data(ctx)
    return {"metric": _metric(ctx).name,
            "samples": {name: d.samples for name, d in data.items()},
            "sets": {name: SETS[name] for name in data},
            "stages": [dict(s) for s in ctx.stages],
            **({"classes_answered": answered} if (answered := ctx.resources.classes_answered)
               else {})}
