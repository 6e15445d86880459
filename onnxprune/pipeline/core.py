"""Pass infrastructure: a timed pipeline that checks contracts and closes resources, and
fixpoints. Modelled on onnx-ir's pass infra and kept as small: a pass is
``run(ctx) -> PassResult``.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx

from .. import interrupts
from ..errors import UsageError, collect_warnings
from .base import ARTIFACTS, PROVIDED_BY, Context, Pass, PassResult
from .entry import LoadModel, UseModel


class Pipeline(Pass):
    """Run passes in order; modified if any pass modified the graph.

    ``Pipeline([...]).run(ctx)`` runs on a context (as a pass); ``.run("model.onnx")`` or
    ``.run(model_proto)`` starts one from a model and returns it.
    """

    name = "pipeline"

    def __init__(self, passes: Iterable[Pass]):
        self.passes = list(passes)

    def run(self, ctx):  # noqa: ANN001 - a Context, a path or a ModelProto
        if not isinstance(ctx, Context):
            start = UseModel(ctx) if isinstance(ctx, onnx.ModelProto) else LoadModel(ctx)
            new = Context()
            Pipeline([start, *self.passes])(new)
            return new
        modified = False
        for p in self.passes:
            interrupts.check()
            modified |= p(ctx).modified
        interrupts.check()
        return PassResult(modified)

    def flat(self):
        """The passes this pipeline runs, nested pipelines opened."""
        for p in self.passes:
            if isinstance(p, Pipeline):
                yield from p.flat()
            else:
                yield p

    def preflight(self, ctx: Context) -> None:
        for p in self.passes:
            p.preflight(ctx)

    def needs(self) -> set[str]:
        have: set[str] = set()
        out: set[str] = set()
        for p in self.passes:
            out |= p.needs() - have
            have |= p.gives()
        return out

    def gives(self) -> set[str]:
        return set().union(*(p.gives() for p in self.passes)) if self.passes else set()

    def check_contracts(self, have: set[str] | None = None) -> None:
        """Every pass gets what it needs from the passes before it (or ``have``): a usage
        error naming the first pass that would not, before anything runs."""
        have = set(have or ())
        for p in self.passes:
            if isinstance(p, Pipeline):
                p.check_contracts(have)
            missing = sorted(p.needs() - have)
            if missing:
                what = ", ".join(f"{ARTIFACTS.get(m, m)} ({m})" for m in missing)
                raise UsageError(f"pass {p.name!r} needs {what}, which no pass before it "
                                 f"provides ({_providers_hint(missing)})")
            have |= p.gives()

    def __call__(self, ctx: Context) -> PassResult:  # a container is not timed as a pass itself
        if ctx.started:
            return self.run(ctx)
        self.check_contracts(ctx.available())
        ctx.started, ctx.planned = True, tuple(self.flat())
        try:
            with collect_warnings(ctx.warnings):
                self.preflight(ctx)
                return self.run(ctx)
        finally:  # the outermost pipeline owns the run's resources
            ctx.resources.close()
            ctx.started = False


class Fixpoint(Pipeline):
    """Repeat the passes until none of them modifies the graph (or ``max_rounds`` is hit)."""

    name = "fixpoint"

    def __init__(self, passes: Iterable[Pass], max_rounds: int = 10):
        super().__init__(passes)
        self.max_rounds = max_rounds

    def run(self, ctx: Context) -> PassResult:
        any_change = False
        for _ in range(self.max_rounds):
            changed = super().run(ctx).modified
            any_change |= changed
            if not changed:
                break
        return PassResult(any_change)


def _providers_hint(missing: list[str]) -> str:
    hints = [f"pass '{PROVIDED_BY[m]}' provides {m}" for m in missing if m in PROVIDED_BY]
    return "; ".join(hints) if hints else "see 'onnxprune passes'"


def total_time(ctx: Context) -> dict[str, float]:
    """Seconds per pass name (summed over repeats)."""
    out: dict[str, float] = {}
    for name, secs in ctx.timings:
        out[name] = out.get(name, 0.0) + secs
    return out


def peak_memory(ctx: Context) -> dict[str, int | None]:
    """Peak resident memory of the process per pass name (bytes; the largest over repeats)."""
    out: dict[str, int | None] = {}
    for name, peak in ctx.memory:
        if peak is not None:
            out[name] = max(out.get(name) or 0, peak)
        else:
            out.setdefault(name, None)
    return out
