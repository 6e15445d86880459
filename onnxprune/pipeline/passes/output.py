"""Output passes: verify the pruned graph and write it."""

from __future__ import annotations

import time
from pathlib import Path

from ...analysis.blocks import with_blocks
from ...analysis.size import graph_params
from ...errors import ConstraintError, OutputError, UsageError, VerificationError, warn
from ...ir import io
from ...ir.weights import proto
from ...options import Option, OptionError, flag, number, text
from ...options import path as path_option
from ...rewrite.share import share_identical_constants
from ...verify.checks import verify_pruned
from ...verify.identity import same_model
from ..base import Context, Pass, PassResult
from ..support import stages
from ..support.inputs import verification_feeds
from .branches import verify_branches
from .frontend import blame_normalization


class Verify(Pass):
    name = "verify"
    description = "Checker, onnxruntime on each provider, and the mask oracle; fail loudly."
    evaluates = True
    requires = ("analysis", "plan", "reference")
    provides = ("verification",)
    uses = (
        "branches", "depth", "graph", "normalize_deferred", "normalize_diff", "source", "source_ir")

    options = (
        Option("seed", 0, "seed of the random inputs", parse=number(0, integer=True),
               type_name="int"),
        Option("compare_input", True, "also compare the normalized graph with the input model "
               "(when normalization did not)", parse=flag, type_name="bool"),
    )

    def run(self, ctx: Context) -> PassResult:
        graph, analysis = ctx.require("graph", self.name), ctx.require("analysis", self.name)
        # the weights stay the graphs' arrays: nothing serialized, nothing copied
        reference = ctx.skeleton(ctx.require("reference", self.name))
        plan = ctx.require("plan", self.name)
        pruned = ctx.skeleton(graph)
        pruned.model.ir_version = io.runtime_ir_version(pruned.model, ctx.source_ir)
        # shapes chosen on the input model: the normalized one may be what is broken
        feed_sets = verification_feeds(ctx, [ctx.source, reference], seed=self.seed)
        # the input model runs unless normalization left it as it was, node for node
        compare = (self.compare_input and ctx.normalize_diff is None
                   and not (ctx.normalize_deferred and same_model(ctx.source, reference)))
        removed, oracle = plan.removed, _search_oracle(ctx)
        if ctx.depth and ctx.depth["removed"] and "units" not in ctx.depth:
            # blocks removed after the selection: a gate per block, closed where it went
            analysis, removed = with_blocks(analysis, removed, ctx.depth["removable"],
                                            ctx.depth["removed"])
            oracle = None
        report = verify_pruned(
            pruned, reference, analysis, removed,
            source=ctx.source if compare else None,
            keep_reference=False, normalize_diff=ctx.normalize_diff,
            providers=ctx.config.providers, seed=self.seed,
            feed_sets=feed_sets, oracle=oracle,
        )
        ctx.verification = report
        if not report.passed:
            blame = (blame_normalization(ctx, feed_sets[0])
                     if ctx.normalize_deferred else None)
            raise VerificationError(blame or "verification failed: " + "; ".join(report.messages))
        if ctx.branches:  # the inputs took one branch of each opened If: each, forced
            verify_branches(ctx, ctx.reference, analysis, removed, feed_sets, self.seed)
        if len(feed_sets) < 2 and _dynamic(reference) and not ctx.config.input_shapes:
            shown = "; ".join(f"{k} {'x'.join(map(str, v))}" for k, v in report.shapes[0].items())
            warn(f"verification ran at one set of input shapes ({shown}): no other size of "
                 "the dynamic dimensions ran; give --input-shape NAME=DxD... for a second")
        stages.measure(ctx, "pruned")
        return PassResult(False, {"max_abs_diff": report.max_abs_diff})


def _dynamic(model) -> bool:
    """Whether a graph input has a dimension that is not a fixed number."""
    for vi in proto(model).graph.input:
        dims = vi.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
            return True
    return False


def _search_oracle(ctx: Context):
    """The gated reference the run's search evaluated its candidates with, when it gates this
    analysis (one oracle per run, not a second session over the weights)."""
    ev = ctx.resources.evaluator
    return ev.oracle if ev is not None and ev.analysis is ctx.analysis else None


class WriteModel(Pass):
    name = "write"
    description = "Write the verified model atomically (never over the input unless forced)."
    requires = ("graph", "verification")
    provides = ("output_path",)
    uses = ("float_graph", "source_ir", "source_params", "source_path")

    options = (
        Option("path", help="where the pruned model goes (never the input, unless forced)",
               parse=path_option, public="output", flag="--output", short="-o", metavar="FILE",
               type_name="path"),
        Option("force", False, "allow the output to replace the input file", parse=flag,
               public="force", kind="switch", type_name="bool"),
        Option("allow_larger", False, "write the model even when it stores more parameters "
               "than the input (weights the input shares, cut a different way for each reader, "
               "stored apart); without it such a run writes nothing (exit 8)", parse=flag,
               public="allow_larger", kind="switch", type_name="bool"),
    )

    def preflight(self, ctx: Context) -> None:
        self._check_not_input(ctx)
        io.output_target(self.path)

    def _check_not_input(self, ctx: Context) -> None:
        if ctx.source_path is not None and _same_file(ctx.source_path, self.path) and not self.force:
            raise OutputError(f"{self.path}: refusing to overwrite the input model (use --force)")

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        self._check_not_input(ctx)
        if ctx.verification is None or not ctx.verification.passed:
            raise OutputError("refusing to write a model that has not passed verification")
        counted = ctx.float_graph if ctx.float_graph is not None else graph
        after = graph_params(counted)
        if ctx.source_params is not None and after > ctx.source_params:
            share_identical_constants(graph)  # vectors unshared to be cut, still equal
            if counted is not graph:
                share_identical_constants(counted)
            after = graph_params(counted)
        if ctx.source_params is not None and after > ctx.source_params:
            message = (f"the pruned model has more parameters than the input ({after:,} > "
                       f"{ctx.source_params:,}): weights the input shares are cut a different "
                       "way for each reader and stored apart")
            if not self.allow_larger:
                raise ConstraintError(f"{message}; nothing written (--allow-larger writes it)")
            warn(message)
        model = ctx.skeleton(graph)  # written from the graph's arrays
        ctx.output_path = io.save_model(model, self.path, source_ir=ctx.source_ir)
        return PassResult(False, {"path": str(ctx.output_path)})


class Report(Pass):
    name = "report"
    description = ("Write report.html (figures beside it) and report.json into a folder, once "
                   "the model is written.")
    requires = ("output_path",)
    provides = ("report_path",)
    uses = ("source_path",)

    options = (
        Option("folder", None, "write a report of the run into this folder (made if missing): "
               "report.html to look at, report.json (what --json prints, and the command), the "
               "figures as PNG; only once the model is written", parse=path_option,
               public="report", metavar="DIR", type_name="path"),
        Option("command", None, "the command the report gives to reproduce the run (default: "
               "the prune() call)", parse=text, public="report_command", flag="",
               type_name="str"),
    )

    def setup(self) -> None:
        if self.folder is None:
            raise OptionError(self.name, "folder", "is required")

    def preflight(self, ctx: Context) -> None:
        from ...report import check_target

        try:
            check_target(self.folder)
        except UsageError as err:  # no matplotlib: name the option
            raise OptionError(self.name, "folder", str(err)) from None

    def check_model(self, model_path: str | Path) -> None:
        """The model is not written where the report writes one of its files."""
        from ...report import check_apart

        check_apart(self.folder, model_path)

    def run(self, ctx: Context) -> PassResult:
        from ...report import check_apart, write_report
        from ..result import report_data, result_of

        output = ctx.require("output_path", self.name)
        check_apart(self.folder, output)  # never over the model just written
        model = str(ctx.source_path) if ctx.source_path is not None else None
        data = report_data(result_of(ctx), model, warnings=ctx.warnings, command=self.command)
        data["wall_seconds"] = time.perf_counter() - ctx.began  # the run until its report
        ctx.report_path = write_report(self.folder, data)
        return PassResult(False, {"path": str(ctx.report_path)})


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
