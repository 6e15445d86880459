"""Where every pipeline is assembled: the prune pipeline as a recipe built in code from public
options (``prune_pipeline``), a recipe file's run (``recipe_pipeline``: ``onnxprune run``) and
the analysis front (``analysis_front``: ``analyze``, the oracle check, the executors' bench).

``onnxprune.prune(**options)`` and ``onnxprune prune --flags`` both come here: every public
option is a pass option (``select.ratio`` is ``ratio``), a run setting (``providers``), or
one of the few switches below that decide which passes the pipeline has. Defaults are the
passes' own, so a run with only ``ratio`` builds what the ``magnitude-uniform`` recipe lists
(its criterion, l2, is what the default criterion resolves to without calibration data).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx

from ..analysis.channels import analyze_channels
from ..analysis.model import ChannelAnalysis
from ..errors import UsageError, warn
from ..options import Option, flag, text
from ..search.quality import get_metric
from ..select.plans import plan_factorized
from .base import RUN_OPTIONS, Context, Pass, RunConfig
from .core import Pipeline
from .entry import LoadModel, UseModel
from .passes.branches import CloseBranches
from .passes.classes import KeepClasses
from .passes.data import Calibrate, MeasureQuality, UseMetric
from .passes.depth import RemoveBlocks
from .passes.factors import Factorize, Unfactorize
from .passes.frontend import Cleanup, Normalize
from .passes.output import Report, Verify, WriteModel
from .passes.pruning import ScoreChannels, SelectChannels
from .passes.quantization import Quantize
from .passes.recovery import Compensate, Distill, VerifyRecovered
from .passes.removal import RemoveChannels
from .passes.rotation import Rotate
from .passes.structure import AnalyzeChannels, DropAdapters, FindComponents, InsertFlowAdapters
from .passes.tokens import KeepTokens

TARGETS = ("params", "macs", "latency")  # --target KIND=F: select.target_<kind>
RECOVERIES = ("compensate", "distill")


def _targets(value: Any) -> dict[str, float]:
    """``params=0.3`` or ``params=0.3,macs=0.5`` (or a mapping) -> {"params": 0.3, ...}."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, str):
        items = [part.partition("=")[::2] for part in value.split(",") if part.strip()]
    else:
        raise ValueError(f"expected KIND=F, e.g. params=0.3, got {value!r}")
    out: dict[str, float] = {}
    for kind, raw in items:
        kind = str(kind).strip()
        if kind not in TARGETS:
            raise ValueError(f"{kind or value!r}: the target is one of {', '.join(TARGETS)} "
                             "followed by =F, e.g. params=0.3")
        if kind in out:
            raise ValueError(f"{kind} given twice")
        out[kind] = raw if not isinstance(raw, str) else raw.strip()
    if not out:
        raise ValueError("expected KIND=F, e.g. params=0.3")
    return out


def _recoveries(value: Any) -> tuple[str, ...]:
    """``none``, ``compensate``, ``distill`` or ``compensate,distill`` (or a list), in pipeline
    order."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    parts = [str(p).strip() for p in parts if str(p).strip()]
    bad = [p for p in parts if p not in (*RECOVERIES, "none")]
    if bad or ("none" in parts and len(parts) > 1):
        raise ValueError(f"{','.join(parts)!r}: expected none, or stages among "
                         f"{', '.join(RECOVERIES)} separated by commas")
    return tuple(r for r in RECOVERIES if r in parts)


SWITCHES = (
    Option("components", "none", "split the model into components: 'auto' from node name "
           "scopes, the path of a TOML map, or 'none' (one component)", parse=text,
           public="components", metavar="auto|none|FILE", type_name="str"),
    Option("target", None, "what the cut must reach: params=F or macs=F removes that fraction "
           "of the parameters or multiply-accumulates; latency=F keeps at most that fraction "
           "of the original's latency (latency=0.5, or a time: latency=4ms), measured on the "
           "first --provider at batch 1 (--set select.latency_batch=B); instead of --ratio",
           parse=_targets, public="target", metavar="params=F|macs=F|latency=F",
           type_name="targets"),
    Option("recover", "none", "after the (verified) removal, 'compensate': refit every layer "
           "that lost inputs so it reproduces the original on the calibration data (ridge "
           "least squares, bias compensation); 'distill': fine-tune the remaining weights on "
           "the original model's outputs (needs torch); both: compensate,distill",
           parse=_recoveries, public="recover", metavar="compensate,distill",
           type_name="list"),
    Option("compensate", False, "the same as --recover compensate (kept for scripts)",
           parse=flag, public="compensate", kind="switch", type_name="bool"),
    Option("quantize", "none", "then quantize the verified model with onnxruntime's "
           "quantizers and check its metric against the float model's (--set "
           "quantize.tolerance=...): int8, static (QDQ, per-channel weights, calibrated on the "
           "calibration data); int4, weight-only MatMul blocks (MatMulNBits, for language "
           "models)", choices=("none", "int8", "int4"), public="quantize"),
    Option("verify", True, "verify the result (the API only: a model is never written "
           "unverified)", parse=flag, public="verify", flag="", type_name="bool"),
)

# The passes whose public options prune() takes, in pipeline order.
PRUNE_PASSES: tuple[type[Pass], ...] = (
    KeepClasses, KeepTokens, Factorize, Rotate, FindComponents, AnalyzeChannels, Calibrate, UseMetric, ScoreChannels, SelectChannels,
    RemoveBlocks, Compensate, Distill, Quantize, WriteModel, Report,
)


def public_options() -> dict[str, tuple[str, Option]]:
    """Public name -> (owner, option): run settings, switches and pass options, each once."""
    out: dict[str, tuple[str, Option]] = {}
    owners = [("run", RUN_OPTIONS), ("prune", SWITCHES)]
    owners += [(cls.name, cls.options) for cls in PRUNE_PASSES]
    for owner, options in owners:
        for o in options:
            if o.public is None:
                continue
            if o.public in out:
                raise RuntimeError(f"public option {o.public} declared twice")
            out[o.public] = (owner, o)
    return out


def public_aliases() -> dict[str, str]:
    """An earlier public name -> the option's name now (both accepted)."""
    return {a: public for public, (_, o) in public_options().items() for a in o.aliases}


def split_options(values: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], dict, dict]:
    """Public values -> ({pass: {option: value}}, run settings, switches), by the schema."""
    known = public_options()
    values = dict(values)
    for alias, public in public_aliases().items():
        if alias in values:
            if public in values:
                raise UsageError(f"{alias} and {public} are one option (its earlier name and "
                                 "its name): give one")
            values[public] = values.pop(alias)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)} (options: "
                         f"{', '.join(sorted(known))})")
    per_pass: dict[str, dict[str, Any]] = {}
    run: dict[str, Any] = {}
    switches: dict[str, Any] = {o.name: o.convert("prune", o.default) for o in SWITCHES}
    for public, value in values.items():
        owner, o = known[public]
        if owner == "run":
            run[o.name] = value
        elif owner == "prune":
            switches[o.name] = o.convert("prune", value)
        else:
            per_pass.setdefault(owner, {})[o.name] = value
    for kind, fraction in (switches.pop("target") or {}).items():  # --target params=F
        select = per_pass.setdefault("select", {})
        if f"target_{kind}" in select:
            raise UsageError(f"target: {kind} given twice (target and target_{kind})")
        select[f"target_{kind}"] = fraction
    recover = set(switches["recover"]) | ({"compensate"} if switches.pop("compensate") else set())
    switches["recover"] = tuple(r for r in RECOVERIES if r in recover)
    return per_pass, run, switches


def prune_pipeline(model: str | Path | onnx.ModelProto, output: str | Path | None,
                   values: Mapping[str, Any]) -> tuple[list[Pass], RunConfig]:
    """The passes and run settings of one prune, from public option values."""
    per_pass, run, sw = split_options(values)
    config = RunConfig.of(**run)
    select = per_pass.setdefault("select", {})
    if per_pass.get(RemoveBlocks.name, {}).get("remove") and not {
            "ratio", "target_params", "target_macs", "plan"} & set(select):
        select["ratio"] = 0.0  # blocks only, unless channels are asked for too

    def make(cls: type[Pass], **fixed: Any) -> Pass:
        return cls(**{**per_pass.get(cls.name, {}), **fixed})

    passes: list[Pass] = [entry(model), Normalize()]
    calib = dict(per_pass.get("calibrate", {}))
    if isinstance(calib.get("path"), dict):  # the API's calib={...}
        calib["arrays"] = calib.pop("path")
    if calib:  # where 'onnxprune run' puts it too
        passes.append(Calibrate(**calib))
    classes = per_pass.get(KeepClasses.name, {})
    if classes.get("keep") is not None:
        passes.append(make(KeepClasses))
    elif classes:
        warn("keep_classes_output: no effect without keep_classes")
    tokens = per_pass.get(KeepTokens.name, {})
    if tokens.get("keep") is not None:
        passes.append(make(KeepTokens))
    elif tokens:
        warn(f"{', '.join(_publics(KeepTokens.name, per_pass))}: no effect without keep_tokens")
    factorize = make(Factorize)  # auto: where the search measures what each rank costs
    factorized = factorize.mode == "on" or (factorize.mode == "auto" and (
        select.get("strategy") == "sensitivity" or (
            select.get("plan") is not None and plan_factorized(select["plan"]))))
    if factorized:
        passes.append(factorize)
    rotation = make(Rotate)
    if calib and rotation.applies(per_pass.get(ScoreChannels.name, {}).get("criterion")):
        passes.append(rotation)
    elif not calib and rotation.mode == "on":
        warn("rotate on: no effect without calibration data (--calib or --calib-random)")
    if sw["components"] != "none":
        passes += [make(FindComponents, spec=sw["components"]), InsertFlowAdapters()]
    elif per_pass.get("components"):
        warn(f"{', '.join(_publics('components', per_pass))}: no effect without components "
             "(components auto or a map)")
    passes.append(make(AnalyzeChannels))
    metric = per_pass.get("metric", {}).get("metric")
    if metric is not None:
        passes.append(make(UseMetric))
    passes += [make(ScoreChannels), make(SelectChannels)]
    if calib or (metric is not None and get_metric(metric).on_model):
        passes.append(MeasureQuality())
    passes.append(RemoveChannels())
    if per_pass.get(RemoveBlocks.name, {}).get("remove") or select.get("depth") == "auto":
        passes.append(make(RemoveBlocks))
    passes.append(Cleanup())
    if sw["components"] != "none":
        passes.append(DropAdapters())
    if factorized:
        passes.append(Unfactorize())
    if sw["verify"]:
        passes.append(Verify())
    for cls in (Compensate, Distill):
        if cls.name in sw["recover"]:
            passes.append(make(cls))
        elif per_pass.get(cls.name):
            warn(f"{', '.join(_publics(cls.name, per_pass))}: no effect without recover "
                 f"{cls.name}")
    if sw["recover"]:
        passes.append(VerifyRecovered())
    passes.append(CloseBranches())  # (nothing to do unless normalization opened an If)
    if sw["quantize"] != "none":
        if not calib:
            what = "calibrates" if sw["quantize"] == "int8" else "is checked"
            raise UsageError(f"--quantize {sw['quantize']} {what} on calibration data: give "
                             "--calib FILE.npz or --calib-random N")
        passes.append(make(Quantize, type=sw["quantize"]))
    elif per_pass.get(Quantize.name):
        warn(f"{', '.join(_publics(Quantize.name, per_pass))}: no effect without --quantize")
    if output is not None:
        passes.append(make(WriteModel, path=output))
    report = per_pass.get("report", {})
    if report.get("folder") is not None:
        if output is None:
            raise UsageError("report: a report describes a written model; give an output")
        command = report.get("command") or api_call(model, output, values)
        passes.append(make(Report, command=command))
        passes[-1].check_model(output)
    elif report.get("command") is not None:
        warn("report_command: no effect without report")
    return passes, config


def _arg(value: Any) -> str:
    """A value as it reads in a call (arrays by their shape and type)."""
    if isinstance(value, Path):
        return repr(str(value))
    if isinstance(value, onnx.ModelProto):
        return "<ModelProto>"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"<array {'x'.join(map(str, value.shape)) or 'scalar'} {value.dtype}>"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {_arg(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_arg(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    return repr(value)


def api_call(model: Any, output: Any, values: Mapping[str, Any]) -> str:
    """The ``onnxprune.prune(...)`` call that builds this pipeline, as code."""
    args = [_arg(model if not isinstance(model, (str, Path)) else str(model)),
            _arg(None if output is None else str(output))]
    args += [f"{k}={_arg(v)}" for k, v in values.items() if k != "report_command"]
    return f"onnxprune.prune({', '.join(args)})"


def _publics(owner: str, per_pass: Mapping[str, Mapping[str, Any]]) -> list[str]:
    names = {o.name: o.public for o in _options_of(owner)}
    return [names.get(k) or k for k in per_pass.get(owner, {})]


def _options_of(owner: str) -> tuple[Option, ...]:
    return next(cls.options for cls in PRUNE_PASSES if cls.name == owner)


def entry(model: str | Path | onnx.ModelProto) -> Pass:
    """The pass a pipeline starts from: a model in memory, or a file."""
    return UseModel(model) if isinstance(model, onnx.ModelProto) else LoadModel(model)


def analysis_front(model: str | Path | onnx.ModelProto, exclude: tuple[str, ...] | list[str],
                   components: str, scope_depth: int | None, flow_policy: str, progress,
                   check: bool = True, config: RunConfig | None = None,
                   kv_cache: bool = False) -> tuple[Context, ChannelAnalysis | None]:
    """Load, normalize, find components and adapters, analyze. Returns the context and the
    analysis of the same graph with plain coupling (when components are used)."""
    ctx = Context(config=config or RunConfig(), progress=progress)
    Pipeline([entry(model), Normalize(check=check)])(ctx)
    plain = None
    if components != "none":
        FindComponents(components, scope_depth, flow_policy)(ctx)
        plain = analyze_channels(ctx.graph, exclude=exclude, component_of=ctx.components.of_node)
        InsertFlowAdapters()(ctx)
    AnalyzeChannels(exclude, kv_cache=kv_cache)(ctx)
    return ctx, plain


def recipe_pipeline(model: str | Path, steps: list[Pass], values: Mapping[str, Any],
                    command: str | None = None) -> Pipeline:
    """A recipe file's passes (``steps``, built with its ``--set`` overrides) as one run:
    calibration data after normalization when given, the write and the report after."""
    steps = list(steps)
    calib = {o.name: values[o.public] for o in Calibrate.options if o.public in values}
    if calib:
        at = next((i + 1 for i, p in enumerate(steps) if p.name == "normalize"), 0)
        steps.insert(at, Calibrate(**calib))
    if not any(p.name == CloseBranches.name for p in steps):
        steps.append(CloseBranches())  # an If the normalization opened is written closed
    steps.append(WriteModel(values["output"], force=values.get("force", False)))
    if "report" in values:
        steps.append(Report(values["report"], command=command))
        steps[-1].check_model(values["output"])
    return Pipeline([LoadModel(model), *steps])
