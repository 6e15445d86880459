"""Output passes: verify the pruned graph and write it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..ir import io
from ..errors import OutputError, VerificationError
from ..ir.graph import export_model
from ..verify.checks import verify_pruned
from .core import Context, Pass, PassResult


class Verify(Pass):
    name = "verify"
    description = "Checker, onnxruntime on each provider, and the mask oracle; fail loudly."
    requires = ("analysis", "plan", "reference")
    provides = ("verification",)

    def __init__(self, providers: Sequence[str] = ("CPUExecutionProvider",), seed: int = 0,
                 compare_input: bool = True, shapes: dict | None = None):
        self.providers, self.seed = list(providers), seed
        self.compare_input, self.shapes = compare_input, shapes

    def run(self, ctx: Context) -> PassResult:
        graph, analysis = ctx.require("graph", self.name), ctx.require("analysis", self.name)
        reference = export_model(ctx.require("reference", self.name))
        plan = ctx.require("plan", self.name)
        pruned = export_model(graph, io.runtime_ir_version(export_model(graph), ctx.source_ir))
        report = verify_pruned(
            pruned, reference, analysis, plan.removed,
            source=ctx.source if self.compare_input and ctx.normalize_diff is None else None,
            keep_reference=False, normalize_diff=ctx.normalize_diff,
            providers=self.providers, seed=self.seed, shapes=self.shapes,
        )
        ctx.verification = report
        if not report.passed:
            raise VerificationError("verification failed: " + "; ".join(report.messages))
        return PassResult(False, {"max_abs_diff": report.max_abs_diff})


class WriteModel(Pass):
    name = "write"
    description = "Write the verified model atomically (never over the input unless forced)."
    requires = ("graph", "verification")
    provides = ("output_path",)

    def __init__(self, path: str | Path, force: bool = False):
        self.path, self.force = Path(path), force

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
        model = export_model(graph)
        ctx.output_path = io.save_model(model, self.path, source_ir=ctx.source_ir)
        return PassResult(False, {"path": str(ctx.output_path)})


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
