"""Pass infrastructure: order, timing, fixpoints, requirements."""

import pytest

from onnxprune.pipeline import Context, Fixpoint, Pass, PassResult, Pipeline, total_time


class Count(Pass):
    name = "count"

    def __init__(self, until: int):
        self.until, self.calls = until, 0

    def run(self, ctx):
        self.calls += 1
        return PassResult(self.calls < self.until, {"calls": self.calls})


def test_pipeline_runs_in_order_and_times_each_pass():
    ctx = Context()
    a, b = Count(1), Count(1)
    b.name = "other"
    result = Pipeline([a, b])(ctx)
    assert not result.modified
    assert [name for name, _ in ctx.timings] == ["count", "other"]
    assert set(total_time(ctx)) == {"count", "other"}


def test_fixpoint_repeats_until_nothing_changes():
    ctx = Context()
    p = Count(until=4)
    assert Fixpoint([p])(ctx).modified
    assert p.calls == 4  # three modifying rounds and one quiet one


def test_fixpoint_stops_at_max_rounds():
    p = Count(until=100)
    Fixpoint([p], max_rounds=5)(Context())
    assert p.calls == 5


def test_require_names_the_missing_input():
    with pytest.raises(RuntimeError, match="needs 'analysis'"):
        Context().require("analysis", "select")
