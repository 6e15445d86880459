"""What passes are and what they share: results, the context (configuration, artifacts,
resources), the run settings, and the base class with options and contracts."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..ir.graph import export_model, export_skeleton
from ..ir.memory import current_rss, peak_window, release
from ..ir.runtime import providers_option
from ..ir.weights import Skeleton
from ..options import Option, number, resolve, shapes, text, texts
from ..search.memory import capped, parse_memory

if TYPE_CHECKING:
    from ..analysis.components import Components, Flow
    from ..analysis.model import ChannelAnalysis
    from ..search.evaluate import Evaluator
    from ..search.quality import Metric
    from ..select.uniform import PrunePlan
    from ..verify.checks import VerifyReport


@dataclass(frozen=True)
class PassResult:
    """What a pass did: whether it changed the graph, and what it learned."""

    modified: bool
    info: Mapping[str, Any] = field(default_factory=dict)


# What passes exchange through the context (contract names are these field names), and what
# each one is, for messages. "eval_data" is what candidate evaluation runs on: calibration data
# or a metric that runs the model itself. Every other field of Context is BOOKKEEPING.
ARTIFACTS = {
    "graph": "a model", "source": "the input model", "components": "components",
    "flows": "components and their flows", "analysis": "the channel analysis",
    "calib": "calibration data", "metric": "a metric", "scores": "channel scores",
    "plan": "a selection of channels", "reference": "the graph before removal",
    "verification": "a verified model", "quality": "the measured quality",
    "output_path": "a written model", "report_path": "a written report",
    "quantization": "a quantized model", "depth": "removed blocks",
    "eval_data": "calibration data (or a metric that runs the model itself)",
    "source_path": "the input model's path", "source_ir": "the input model's IR version",
    "source_params": "the input model's parameters", "pinned": "pinned input values",
    "bn_scales": "the folded BatchNorms' scales",
    "normalize_diff": "how far normalization moved the outputs",
    "normalize_deferred": "verification compares with the input model",
    "input_sets": "the input shapes checks run at",
    "branches": "If nodes written as both branches", "origin": "the graph before classes, "
    "tokens or factors", "classes": "the classes kept", "tokens": "the tokens kept",
    "factors": "matrices written as two factors", "factorization": "the rank each kept",
    "heldout": "the held-out calibration data", "probe": "the random-token probe",
    "criterion": "the criterion that scored the channels",
    "select_info": "what the selection learned",
    "interface": "graph inputs and outputs that lost channels",
    "stages": "the quality after each stage", "recovery": "what recovery did",
    "float_graph": "the float model a quantized one came from",
}
# The run's own state: settings, resources, timings and logs, caches.
BOOKKEEPING = frozenset({
    "config", "resources", "log", "timings", "memory", "warnings", "began", "started",
    "planned", "progress", "shapes_of", "input_sets_from_calib"})


def _values(value: Any) -> Mapping[str, Any] | list[str]:
    """Pins as given (typed against the model's inputs once it is loaded)."""
    if isinstance(value, Mapping):
        return dict(value)
    return texts(value)


def target_host(value: Any) -> str:
    from ..bench.remote import parse

    spec = str(value).strip()
    parse(spec)  # USER@HOST[:PORT], or ValueError
    return spec


RUN_OPTIONS = (
    Option("providers", "cpu", "onnxruntime execution providers the result "
           "must run on (verification, the latency probe); short names cpu, cuda, tensorrt",
           parse=providers_option, public="providers", flag="--provider",
           metavar="cpu,cuda,tensorrt", type_name="list"),
    Option("input_shapes", None, "shapes for inputs with dynamic non-batch dimensions "
           "(verification), NAME=DxD... (repeatable)", parse=shapes, public="input_shapes",
           flag="--input-shape", metavar="NAME=DxD...", kind="append", type_name="shapes"),
    Option("input_values", None, "pin an input to a value, NAME=VALUE (repeatable; a number "
           "or comma-separated numbers): a sample rate or a flag that selects a branch; the "
           "pruned model computes with that value (the input stays, unused)", parse=_values,
           public="input_values", flag="--input-value", metavar="NAME=VALUE", kind="append",
           type_name="values"),
    Option("memory", None, "the most resident memory the run may hold, e.g. 4G (the "
           "libraries, the model and its data count): searches, activation fetches, refits and "
           "distillation size their work to what it leaves; without it, candidate runs take "
           "at most a quarter of the available memory (8G at most)", parse=parse_memory, public="memory",
           metavar="SIZE", type_name="size"),
    Option("executor", "local", "where search candidates are scored: this process, a local "
           "process pool, or Ray actors (pip install onnxprune[ray]); results are identical",
           choices=("local", "process", "ray"), public="executor"),
    Option("workers", None, "workers for executor process/ray (default: the CPUs available)",
           parse=number(1, integer=True), public="workers", metavar="N", type_name="int"),
    Option("ray_address", None, "a Ray cluster to join (default: start a local Ray)",
           parse=text, public="ray_address", metavar="ADDR", type_name="str"),
    Option("target_host", None, "the device that will run the model, over SSH: a latency "
           "target's tables and end-to-end checks and --bench are measured there (it needs "
           "Python with numpy and onnxruntime; a script and the models are copied into a "
           "temporary folder it removes)", parse=target_host, public="target_host",
           metavar="USER@HOST[:PORT]", type_name="str"),
)



@dataclass(frozen=True)
class RunConfig:
    """What a whole run was asked for, read by the passes that need it (not pass options)."""

    providers: tuple[str, ...] = ("CPUExecutionProvider",)  # onnxruntime's names
    input_shapes: Mapping[str, Sequence[int]] | None = None
    input_values: Mapping[str, Any] | Sequence[str] | None = None  # raw pins, typed at load
    executor: str = "local"
    workers: int | None = None
    ray_address: str | None = None
    memory: int | None = None  # bytes; None: the default budget
    target_host: str | None = None  # USER@HOST[:PORT]: latencies measured there over SSH

    @classmethod
    def of(cls, **values: Any) -> RunConfig:
        v = resolve("run", RUN_OPTIONS, (), values)
        return cls(tuple(v["providers"]), v["input_shapes"], v["input_values"], v["executor"],
                   v["workers"], v["ray_address"], v["memory"], v["target_host"])


class Resources:
    """What a run holds open (the candidate evaluator and its pool); the pipeline closes it."""

    def __init__(self) -> None:
        self.evaluator: Evaluator | None = None
        self.references: dict[str, list[np.ndarray]] = {}  # unpruned outputs per data set
        # classes the original answers on the calibration data (support/coverage.py; None:
        # not yet looked at)
        self.classes_answered: list[dict] | None = None

    def close(self) -> None:
        if self.evaluator is not None:
            self.evaluator.close()
            self.evaluator = None


@dataclass
class Context:
    """What passes share: the run's configuration, its artifacts (the working graph and what
    passes learn about it) and its resources."""

    config: RunConfig = field(default_factory=RunConfig)
    resources: Resources = field(default_factory=Resources)
    # artifacts
    graph: gs.Graph | None = None
    source: Skeleton | None = None  # the model as loaded (never modified; weights as arrays)
    source_path: Path | None = None
    source_ir: int | None = None
    source_params: int | None = None  # parameters of the input model (unique initializers)
    components: Components | None = None
    flows: list[Flow] | None = None
    analysis: ChannelAnalysis | None = None
    normalize_diff: float | None = None  # normalized vs input model, relative (when compared)
    normalize_deferred: bool = False  # verification compares them (no arithmetic changed)
    bn_scales: dict[str, np.ndarray] = field(default_factory=dict)  # gamma of folded BNs
    pinned: dict[str, np.ndarray] = field(default_factory=dict)  # input -> pinned value
    input_sets: list[dict[str, list[int]]] | None = None  # the shapes checks run at
    input_sets_from_calib: bool = False
    calib: dict[str, np.ndarray] | None = None  # calibration batch (inputs, optional labels)
    heldout: dict[str, np.ndarray] | None = None  # held-out share of it (quality, never fitted)
    probe: dict[str, np.ndarray] | None = None  # its token-id inputs randomized (pipeline/probe)
    stages: list[dict[str, Any]] = field(default_factory=list)  # quality after each stage
    metric: Metric | None = None
    select_info: dict[str, Any] | None = None  # what the selection strategy learned
    quality: dict[str, Any] | None = None  # metric before/after the cut (the search's data)
    recovery: dict[str, Any] = field(default_factory=dict)  # compensation/distillation
    scores: np.ndarray | None = None  # one importance per unit
    criterion: str | None = None  # the criterion that scored them
    plan: PrunePlan | None = None
    reference: gs.Graph | None = None  # the normalized graph before removal (for the oracle)
    origin: gs.Graph | None = None  # the normalized graph before classes / tokens / factors
    classes: dict[str, Any] | None = None  # what keeping only some classes did (classes pass)
    tokens: dict[str, Any] | None = None  # what keeping only some tokens did (tokens pass)
    factors: list | None = None  # the matrices written as two factors (factorize pass)
    branches: list | None = None  # Ifs written as both branches until closed (open-branches)
    factorization: list[dict] | None = None  # per factorized matrix: the rank kept (unfactorize)
    # graph inputs/outputs that lost channels (an opened decoder cache): name -> [(axis, keep)]
    interface: dict[str, list] | None = None
    depth: dict[str, Any] | None = None  # the residual blocks found, scored and removed
    verification: VerifyReport | None = None
    quantization: dict[str, Any] | None = None  # what quantizing the model did (int8, figures)
    float_graph: gs.Graph | None = None  # the verified float model a quantized one came from
    output_path: Path | None = None
    report_path: Path | None = None  # the report.html written after the model
    # bookkeeping
    timings: list[tuple[str, float]] = field(default_factory=list)
    memory: list[tuple[str, int | None]] = field(default_factory=list)  # peak RSS per pass
    began: float = field(default_factory=time.perf_counter)  # when the run began (wall)
    log: list[tuple[str, PassResult]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # said during the run, each once
    progress: Callable[[str], None] | None = None
    started: bool = False  # the outermost pipeline has run its checks
    planned: tuple[Pass, ...] = ()  # every pass the outermost pipeline runs, in order
    # the graph shape inference last annotated (a weak reference), while no pass changed it
    shapes_of: Callable[[], gs.Graph | None] | None = None

    def export(self, graph: gs.Graph | None = None,
               ir_version: int | None = None) -> onnx.ModelProto:
        """``graph`` (default: the working graph) as a model, with the input model's fields the
        IR drops (metadata, graph output types, ...)."""
        return export_model(self.graph if graph is None else graph, ir_version, like=self.source)

    def skeleton(self, graph: gs.Graph | None = None, ir_version: int | None = None) -> Skeleton:
        """``export`` with the large weights left as the graph's arrays (for sessions and
        checks; nothing serialized or copied)."""
        return export_skeleton(self.graph if graph is None else graph, ir_version,
                               like=self.source)

    def available(self) -> set[str]:
        """The artifacts already present (a context a pipeline continues from)."""
        have = {name for name in ARTIFACTS if getattr(self, name, None) is not None}
        if self.calib is not None or getattr(self.metric, "on_model", None):
            have.add("eval_data")  # what candidate evaluation runs on
        return have

    def require(self, attr: str, by: str) -> Any:
        value = getattr(self, attr)
        if value is None:
            raise RuntimeError(f"pass {by!r} needs {attr!r}; run the pass that computes it first")
        return value


class Pass:
    """Base class. Subclasses set ``name``/``description`` and implement ``run``.

    Contracts: ``requires`` names the artifacts (context fields) a pass reads and
    ``provides`` those it sets; ``needs()``/``gives()`` may refine them from the options.
    A pipeline checks the whole list before its first pass runs, and each pass that it set
    what it provides. ``uses``: artifacts it reads when present, or sets only sometimes (not
    checked at run time; a test checks that every artifact ``run`` touches is declared).
    ``evaluates``: it runs candidates on the run's evaluator, which stays open until the last
    such pass of the run has run."""

    name: ClassVar[str] = "pass"
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ()
    uses: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[Option, ...]] = ()
    # runs candidates on the run's mask-oracle evaluator (``passes.data.evaluator``): it stays
    # open while a later pass does, and is closed (its sessions, reference outputs and caches
    # given back) after the last
    evaluates: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any):
        """Option values by position (declaration order) or name, checked by the schema;
        ``setup`` then checks how they combine."""
        self.values = resolve(self.name, self.options, args, kwargs)
        names = [o.name for o in self.options]
        self.given = frozenset(names[:len(args)]) | frozenset(kwargs)  # not the defaults
        for key, value in self.values.items():
            setattr(self, key, value)
        self.setup()

    def setup(self) -> None:
        """Checks across options (raise ``OptionError``) and state derived from them."""

    def needs(self) -> set[str]:
        return set(self.requires)

    def gives(self) -> set[str]:
        return set(self.provides)

    def run(self, ctx: Context) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def preflight(self, ctx: Context) -> None:
        """Checks that need no work (an output folder, a file to read); run for every pass
        of a pipeline before its first pass runs."""

    def __call__(self, ctx: Context) -> PassResult:
        if ctx.progress is not None:
            ctx.progress(self.name)
        if not ctx.memory:  # what the process held before the run (libraries, the caller)
            ctx.memory.append(("start", current_rss()))
        start = time.perf_counter()
        with peak_window() as memory, capped(ctx.config.memory):
            result = self.run(ctx)
        if not self._evaluated_later(ctx):
            ctx.resources.close()
        release()  # what the pass freed (glibc's heap, the search sessions' arena) goes back
        missing = sorted(a for a in self.gives() - {"eval_data"} if getattr(ctx, a, None) is None)
        if missing:  # a pass that does not do what it declares is a bug, named here
            raise RuntimeError(f"pass {self.name!r} did not provide {', '.join(missing)}")
        if result.modified:
            ctx.shapes_of = None
        ctx.timings.append((self.name, time.perf_counter() - start))
        ctx.memory.append((self.name, memory.peak))
        ctx.log.append((self.name, result))
        return result

    def _evaluated_later(self, ctx: Context) -> bool:
        """Whether a pass after this one in the run may use the evaluator (unknown: yes)."""
        at = next((i for i, p in enumerate(ctx.planned) if p is self), None)
        return at is None or any(p.evaluates for p in ctx.planned[at + 1:])

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in getattr(self, "values", {}).items())
        return f"{type(self).__name__}({opts})"


PROVIDED_BY: dict[str, str] = {}  # artifact -> a pass that provides it (filled by the catalogue in passes.py)
