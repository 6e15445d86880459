"""The passes that open ``If`` branches holding a network for the analysis and close them
again after the cut (``rewrite/branches.py``), and the forcing that lets verification check
each branch whatever the inputs choose."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import onnx_graphsurgeon as gs

from ...analysis.branches import holds_weights
from ...analysis.size import macs_at
from ...errors import UsageError, VerificationError, first_line, warn
from ...ir.runtime import session
from ...ir.shapes import choose_shapes
from ...ir.weights import proto
from ...rewrite.branches import Opened, close_ifs, open_ifs
from ...verify.compare import close
from ..base import Context, Pass, PassResult
from ..support.inputs import verification_feeds


class OpenBranches(Pass):
    name = "open-branches"
    description = ("Write an If whose branches hold a network as both branches and a Where "
                   "per output, so both are analyzed, pruned and verified (closed again before "
                   "the model is written); left as it is when the branches cannot both run on "
                   "the same inputs.")
    requires = ("graph",)
    uses = ("branches",)  # set where it opens one

    def __init__(self, after: Pass | None = None):
        super().__init__()
        self.after = after  # what runs again on the opened graph (folding a branch's Ifs)

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        ifs = [n.name for n in graph.nodes if n.op == "If" and holds_weights(n)]
        if not ifs:
            return PassResult(False)
        before = graph.copy()
        opened = open_ifs(graph)
        if self.after is not None:
            self.after.run(ctx)
        reason = _runs_both_ways(ctx, opened)
        if reason is not None:
            ctx.graph = before
            warn(f"If node {ifs[0]} is kept whole (its branches do not both run on the same "
                 f"inputs: {reason}); pin the input that chooses the branch with --input-value "
                 "to prune the branch it takes")
            return PassResult(False, {"kept": ifs, "why": reason})
        ctx.branches = (ctx.branches or []) + opened
        return PassResult(True, {"opened": [o.name for o in opened]})


class CloseBranches(Pass):
    name = "close-branches"
    description = "Move each opened If's branches back into it, checked branch by branch."
    requires = ("graph",)
    uses = ("branches", "input_sets")

    def run(self, ctx: Context) -> PassResult:
        if not ctx.branches:
            return PassResult(False)
        graph = ctx.require("graph", self.name)
        flat = graph.copy()
        sets = ctx.input_sets
        macs = macs_at(flat, sets[0] if sets else None)  # (counting does not enter an If)
        feeds = verification_feeds(ctx, ctx.skeleton(flat))
        want = {v: _run(ctx, flat, ctx.branches, v, feeds) for v in (True, False)}
        try:
            close_ifs(graph, ctx.branches)
        except ValueError as err:
            raise VerificationError(f"closing the branches again failed ({err}); please "
                                    "report this") from None
        for value in (True, False):
            got = _run(ctx, graph, ctx.branches, value, feeds)
            if not close(got, want[value], rtol=1e-6, atol=1e-6):
                raise VerificationError(f"closing the branches changed the "
                                        f"{'then' if value else 'else'} branch; please report "
                                        "this")
        closed = [o.name for o in ctx.branches]
        ctx.branches = None
        return PassResult(True, {"closed": closed, "macs": macs})


def verify_branches(ctx: Context, reference: gs.Graph, analysis, removed, feed_sets,
                    seed: int) -> None:
    """Verify the cut once per branch of every opened If, each forced whatever the inputs
    choose (the inputs take one of them): raises naming the branch that fails."""
    from ...verify.checks import verify_pruned

    graph = ctx.require("graph", "verify")
    for value in (True, False):
        with forced(graph, ctx.branches, value), forced(reference, ctx.branches, value):
            report = verify_pruned(
                ctx.skeleton(graph), ctx.skeleton(reference), analysis, removed,
                keep_reference=False, providers=ctx.config.providers, seed=seed,
                feed_sets=feed_sets)
        if not report.passed:
            raise VerificationError(f"verification failed in the {'then' if value else 'else'} "
                                    f"branch of {ctx.branches[0].name}: "
                                    + "; ".join(report.messages))


@contextmanager
def forced(graph: gs.Graph, opened: list[Opened] | None, value: bool) -> Iterator[gs.Graph]:
    """The graph with every opened If (or the Wheres that stand for it) taking the branch
    ``value`` whatever its condition says; restored on exit. An If opened inside another's
    branch follows its own condition (it may choose by the shapes the outer branch makes)."""
    outer = [o for o in opened or () if o.inside is None]
    names = {o.name for o in outer} | {w for o in outer for w in o.wheres}
    swapped = []
    for node in graph.nodes:
        if node.name in names and node.op in ("If", "Where"):
            swapped.append((node, node.inputs[0]))
            node.inputs[0] = gs.Constant(f"{node.name}/forced", np.array(value))
    try:
        yield graph
    finally:
        for node, cond in swapped:
            node.inputs[0] = cond


def _run(ctx: Context, graph: gs.Graph, opened, value: bool, feed_sets) -> list[np.ndarray]:
    with forced(graph, opened, value):
        sess = session(ctx.skeleton(graph), quiet=True)
        return [o for feeds in feed_sets for o in sess.run(None, feeds)]


def _runs_both_ways(ctx: Context, opened: list[Opened]) -> str | None:
    """None when the opened graph runs with each branch forced at some shapes (chosen here,
    for every later check, where both branches run) and computes what the input model does
    there; else why not."""
    if ctx.source is None:
        return None
    sessions = []
    try:
        for value in (True, False):
            with forced(ctx.graph, opened, value):
                sessions.append(session(ctx.skeleton(), quiet=True))
    except Exception as err:  # noqa: BLE001 - e.g. outputs of shapes no Where can choose
        return first_line(err)

    def runs(feeds) -> bool:
        try:
            for sess in sessions:
                sess.run(None, feeds)
            return True
        except Exception:  # noqa: BLE001 - a branch does not take these shapes
            return False

    try:
        ctx.input_sets = choose_shapes(proto(ctx.source), given=ctx.config.input_shapes,
                                       calib=ctx.calib, pinned=ctx.pinned, runs=runs)
    except UsageError:
        return "no input shapes at which both run"
    ctx.input_sets_from_calib = ctx.calib is not None
    feed_sets = verification_feeds(ctx, ctx.source)
    try:
        want = [session(ctx.source, quiet=True).run(None, f) for f in feed_sets]
    except Exception:  # noqa: BLE001 - the input does not run here: nothing to compare
        return None
    try:
        got = [session(ctx.skeleton(), quiet=True).run(None, f) for f in feed_sets]
    except Exception as err:  # noqa: BLE001 - e.g. outputs of shapes no Where can choose
        return first_line(err)
    if not all(close(g, w, rtol=1e-5, atol=1e-6) for g, w in zip(got, want, strict=True)):
        return "the opened graph computes something else"
    return None

