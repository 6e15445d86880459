"""The inputs every check runs on: pinned values, and the sets of shapes chosen once per run
(``ir.shapes``), from the calibration data when there is some."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from ...errors import UsageError
from ...ir.runtime import session
from ...ir.shapes import choose_shapes, feeds_at, input_specs
from ...ir.weights import Skeleton
from ...search.memory import activation_bytes, search_budget
from ..base import Context


def verification_feeds(ctx: Context,
                       model: onnx.ModelProto | Skeleton | Sequence[onnx.ModelProto | Skeleton],
                       count: int = 2, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Random inputs at each chosen set of shapes (the first ``count`` of them), pinned inputs
    at their values. Shapes are chosen on ``model`` (any model with the run's inputs; given
    several, the first one that runs at some shapes) the first time and kept in the context;
    calibration data that arrived since takes the first set, unless a model's If was opened
    (its shapes were chosen where each branch runs, which the calibration's need not be)."""
    models = [model] if isinstance(model, (onnx.ModelProto, Skeleton)) else [m for m in model if m]
    if ctx.input_sets is None or (ctx.calib is not None and not ctx.input_sets_from_calib
                                  and not ctx.branches):
        for i, candidate in enumerate(models):
            try:
                ctx.input_sets = choose_shapes(candidate, given=ctx.config.input_shapes,
                                               calib=ctx.calib, pinned=ctx.pinned,
                                               runs=_runner(candidate))
                break
            except UsageError:
                if i == len(models) - 1:
                    raise
        ctx.input_sets_from_calib = ctx.calib is not None
    specs = input_specs(models[0])
    return [feeds_at(specs, shapes, ctx.pinned, seed + i)
            for i, shapes in enumerate(ctx.input_sets[:count])]


GROWTH = 4  # shapes this many times the first one's elements are sized before they run


def _runner(model: onnx.ModelProto | Skeleton):
    """Whether the model runs at the feeds. Shapes far larger than the first tried are sized
    first (shape inference): one whose activations would not fit the search's memory budget is
    refused without running (a model that fails at every size must not reach gigabytes on the
    way to 1024 x 1024)."""
    state: dict = {}

    def runs(feeds: dict[str, np.ndarray]) -> bool:
        size = sum(int(np.size(v)) for v in feeds.values())
        first = state.setdefault("first", size)
        if size > GROWTH * first:
            need = activation_bytes(model, feeds)
            if need is not None and need > search_budget():
                return False
        try:
            if "session" not in state:
                state["session"] = session(model, quiet=True)
            state["session"].run(None, feeds)
            return True
        except Exception:  # noqa: BLE001 - any failure: the model does not take these shapes
            return False

    return runs


def changed_output(ctx: Context, before, rtol: float, atol: float) -> str | None:
    """The first float output the working graph computes other than ``before`` did (beyond
    ``rtol`` and ``atol`` times the output's largest magnitude, at least 1), at every set of
    verification shapes; None when none does. For rewrites that keep the function."""
    want_model, got_model = ctx.skeleton(before), ctx.skeleton()
    a_sess, b_sess = session(want_model), session(got_model)
    for feeds in verification_feeds(ctx, want_model):
        for out, w, g in zip(before.outputs, a_sess.run(None, feeds), b_sess.run(None, feeds),
                             strict=True):
            if not np.issubdtype(np.asarray(w).dtype, np.floating):
                continue
            if w.shape != g.shape or not np.allclose(g, w, rtol=rtol, atol=atol * max(
                    float(np.abs(w).max(initial=0.0)), 1.0)):
                return out.name
    return None
