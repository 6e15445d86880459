"""The oracle check used by the tests: random channel masks, physically removed, must give
the same outputs as the gated reference with those gates closed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from .analysis.model import ChannelAnalysis
from .ir.graph import export_model, import_model
from .ir.runtime import random_feeds, session
from .pipeline import Context, Pipeline
from .pipeline.passes import Normalize, UseModel
from .pipeline.passes.structure import analyze_graph
from .rewrite.remove import remove_units
from .verify.compare import close, max_diffs
from .verify.oracle import Oracle


def normalized(model: onnx.ModelProto) -> onnx.ModelProto:
    ctx = Context()
    Pipeline([UseModel(model), Normalize()])(ctx)
    return export_model(ctx.graph)


def random_removal(analysis: ChannelAnalysis, rng: np.random.Generator,
                   fraction: float | None = None) -> np.ndarray:
    """Remove a random subset of every prunable group (at least one unit of each stays)."""
    removed = np.zeros(analysis.num_units, dtype=bool)
    for g in analysis.groups:
        if g.frozen:
            continue
        free = g.units[~analysis.unit_frozen[g.units]]
        limit = min(free.size, g.channels - 1)
        if limit <= 0:
            continue
        k = int(rng.integers(1, limit + 1)) if fraction is None else int(limit * fraction)
        removed[rng.choice(free, size=k, replace=False)] = True
    return analysis.enforce_links(removed)


@dataclass(frozen=True)
class OracleCheck:
    analysis: ChannelAnalysis
    trials: int
    max_abs_diff: float
    removed_fraction: float  # mean fraction of prunable units removed per trial


def check_oracle(
    model: onnx.ModelProto, seed: int = 0, trials: int = 3, exclude: Sequence[str] = (),
    feeds: dict[str, np.ndarray] | None = None, components: str = "none",
    flow_policy: str = "own",
) -> OracleCheck:
    """Raise AssertionError unless every random removal matches the oracle.

    With ``components``, the graph gets the flow adapters the component analysis inserts.
    """
    if components == "none":
        graph = import_model(normalized(model))
        analysis = analyze_graph(graph, exclude=exclude)
        reference = export_model(graph)  # with the shapes the analysis saw
    else:
        from .pipeline.build import analysis_front

        ctx, _ = analysis_front(model, exclude, components, None, flow_policy, None)
        reference, analysis = export_model(ctx.graph), ctx.analysis
    oracle = Oracle(reference, analysis)
    feeds = feeds or random_feeds(reference, seed=seed)
    base = session(reference).run(None, feeds)
    ones = oracle.run(feeds)
    if all(g.batched and g.kind == "mul" for g in analysis.gates):  # x * 1 is exact
        assert all(np.array_equal(a, b) for a, b in zip(base, ones, strict=True)), \
            "gated model with all gates open differs from the reference"
    elif all(g.kind == "mul" for g in analysis.gates):  # gated weights: computed inputs
        assert close(ones, base, rtol=1e-6, atol=1e-7), \
            "gated model with all gates open differs from the reference"
    else:  # a norm rebuilt from primitive ops: float rounding of its statistics
        assert close(ones, base, rtol=1e-5, atol=1e-6), \
            "gated model with all gates open differs from the reference"
    rng = np.random.default_rng(seed)
    worst, fractions = 0.0, []
    prunable = max(1, sum(g.prunable for g in analysis.groups if not g.frozen))
    for _ in range(trials):
        removed = random_removal(analysis, rng)
        graph = import_model(reference)
        remove_units(graph, analysis, removed)
        pruned = export_model(graph)
        onnx.checker.check_model(pruned, full_check=True)
        got = session(pruned).run(None, feeds)
        want = oracle.run(feeds, ~removed)
        diff = max_diffs(got, want)[0]
        assert close(got, want), f"pruned model differs from the oracle (max abs diff {diff})"
        worst = max(worst, diff)
        fractions.append(removed.sum() / prunable)
    return OracleCheck(analysis, trials, worst, float(np.mean(fractions)) if fractions else 0.0)
