"""Meeting a latency target: the selection asks the latency model for a reduction, the cut is
measured end to end against the original (alternately), and the asked reduction is corrected
by the miss until the measured latency is within ``TOLERANCE`` of the target. Where two cuts
the selection gives next to each other measure on either side of the band (a step of every
layer at once can jump over it: MobileNetV2 at batch 32 measured 0.57 and 0.43 for a 0.5
target), cuts between them are measured: the one cut with the groups where they differ taken
from the other, a few at a time, bisected on how many."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis.blocks import Block
from ..analysis.model import ChannelAnalysis
from ..analysis.size import shaped
from ..errors import ConstraintError
from ..ir.graph import export_skeleton
from ..rewrite.blocks import remove_blocks
from ..rewrite.remove import remove_units
from .model import LatencyModel
from .table import LatencyTable
from .timer import LocalTimer

TOLERANCE = 0.05  # of the target
TRIES = 6
MIX_TRIES = 4  # cuts measured between the closest slow and fast ones


def parse_latency(value) -> str:
    """``0.5`` (of the original's latency) or an absolute ``4ms`` / ``0.004s``."""
    text = str(value).strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?", text)
    if m is None:
        raise ValueError(f"expected a fraction of the original's latency (0.5) or a time "
                         f"(4ms), got {value!r}")
    number = float(m[1])
    if m[2] is None and not 0 < number < 1:
        raise ValueError(f"a latency fraction is in (0, 1), got {number:g}")
    if m[2] is not None and number <= 0:
        raise ValueError(f"a latency must be positive, got {value!r}")
    return text


@dataclass
class LatencyRun:
    """What meeting a latency target did (``--json`` "latency")."""

    asked: str
    target: float  # pruned / original latency wanted
    batch: int
    provider: str
    device: dict
    original_ms: float = 0.0
    original_spread: float = 0.0
    attempts: list[dict] = field(default_factory=list)
    table: dict = field(default_factory=dict)
    host: str | None = None  # the device measured over SSH (--target-host); None: here
    # how the cut was chosen: within the band, or (none was) the best metric of the cuts
    # measured faster, or the closest to the target
    chosen_by: str = "band"

    def json(self, chosen: dict | None) -> dict:
        return {"asked": self.asked, "target": self.target, "batch": self.batch,
                "provider": self.provider, "device": self.device.get("processor"),
                "threads": self.device.get("threads") or None,
                # the original as timed beside the chosen cut (the ratio's denominator)
                "original_ms": chosen["original_ms"] if chosen else self.original_ms,
                "original_spread": chosen["original_spread"] if chosen else self.original_spread,
                "pruned_ms": chosen and chosen["ms"], "pruned_spread": chosen and chosen["spread"],
                "achieved": chosen and chosen["ratio"], "attempts": self.attempts,
                "table": self.table, "host": self.host, "chosen_by": self.chosen_by}


class LatencyTarget:
    """The latency model of ``graph`` at ``batch`` on ``provider``, and end-to-end checks."""

    def __init__(self, graph: gs.Graph, analysis: ChannelAnalysis, shapes: dict,
                 asked: str, batch: int, provider: str, cache: bool, seconds: float = 1.0,
                 blocks: Sequence[tuple[int, Block]] = (), timer=None):
        """``blocks``: (unit, block) of residual blocks the selection may remove whole;
        ``timer``: where latencies are measured (``latency.timer``; default: here)."""
        self.graph, self.analysis, self.seconds = graph, analysis, seconds
        self.tried: list[tuple[np.ndarray, dict]] = []  # every cut measured: (removed, got)
        self.blocks = list(blocks)
        self.shapes = {k: [batch, *v[1:]] if v else v for k, v in shapes.items()}
        at = shaped(graph, self.shapes)
        self.feeds = {t.name: _random(t) for t in at.inputs}
        self.original = export_skeleton(graph)
        self.provider = provider
        self.timer = timer or LocalTimer(provider)
        first = self.timer.time([self.original], [self.feeds], seconds, keep=[0])[0]
        table = LatencyTable(provider, cache=cache, timer=self.timer)
        self.model = LatencyModel(at, analysis, table, first["ms"], self.blocks, self.feeds)
        target = _fraction(asked, first["ms"])
        self.run = LatencyRun(asked, target, batch, provider, table.device, first["ms"],
                              first["spread"], table={"layers": len(self.model.layers),
                                                      "measured": table.measured,
                                                      "reused": table.reused,
                                                      "file": str(table.path)})
        self.run.host = None if isinstance(self.timer, LocalTimer) else self.timer.where

    def measure(self, removed: np.ndarray) -> dict:
        """The cut's latency and the original's, measured alternately; ratio = pruned/original."""
        g = self.graph.copy()  # shares the weights; removal assigns new arrays
        remove_units(g, self.analysis, removed)
        gone = [b for unit, b in self.blocks if removed[unit]]
        if gone:
            remove_blocks(g, gone)
        g.cleanup().toposort()
        orig, cut = self.timer.time([self.original, export_skeleton(g)],
                                    [self.feeds, self.feeds], self.seconds / 2, keep=[0])
        return {"ms": cut["ms"], "spread": cut["spread"], "original_ms": orig["ms"],
                "original_spread": orig["spread"], "ratio": cut["ms"] / orig["ms"]}

    def meet(self, select: Callable[[float], np.ndarray],
             quality: Callable[[np.ndarray], float] | None = None) -> np.ndarray:
        """The cut ``select`` gives for the reduction that measures within TOLERANCE of the
        target (the asked reduction corrected by each miss), or ConstraintError (exit 8)
        naming the best reached. When no cut measures within it but some measure faster,
        the fast cut ``quality`` (of a removed mask; higher is better: the application
        metric on the calibration data) scores best is chosen, else the closest to it."""
        want = self.run.target
        if want >= 1.0:  # the original is fast enough already: nothing is cut
            removed = np.zeros(self.analysis.num_units, bool)
            got = self.run.chosen = self.measure(removed)
            self.run.attempts.append({"predicted": 1.0, "achieved": round(got["ratio"], 4),
                                      "ms": got["ms"]})
            return removed
        best, seen, measured = None, [], []
        points = [(0.0, 1.0)]  # (the model's reduction of a cut, its measured latency ratio)
        asked = float(np.clip(1.0 - want, 0.0, 0.99))  # (a time above the original's: none)
        for attempt in range(TRIES):
            removed = select(asked)
            if any(np.array_equal(removed, r) for r in seen):
                if attempt == 0:
                    break
                # the same cut again: ask a little more (or less) in the direction of the miss
                step = 0.03 if best[1]["ratio"] > want else -0.03
                asked = float(np.clip(asked + step, 0.0, 0.99))
                continue
            seen.append(removed)
            got = self._try(removed)
            measured.append((removed, got))
            if best is None or _better(got["ratio"], best[1]["ratio"], want):
                best = (removed, got)
            if _within(got["ratio"], want):
                break
            if attempt == 0:  # calibrate the table on the first cut, then keep it fixed
                self.model.fit(removed, got["ratio"] * self.run.original_ms)
                points = [(0.0, 1.0)] + [(self.model.reduction(r), m["ratio"]) for r, m in
                                         [(removed, got)]]
            else:
                points.append((self.model.reduction(removed), got["ratio"]))
            asked = _next(points, want)
            if asked is None:
                break
        if not _within(best[1]["ratio"], want):
            best = self._between(measured, best, want)
        best, self.run.chosen_by = _choose(self.tried, best, want, quality)
        removed, got = best
        self.run.chosen = got
        if got["ratio"] > want * (1 + TOLERANCE):
            raise ConstraintError(
                f"target latency {self.run.asked} ({want:.3g} of the original's "
                f"{self.run.original_ms:.3g} ms at batch {self.run.batch} on {self.provider}) "
                f"cannot be met: the closest cut reached {got['ratio']:.3g} ({got['ms']:.3g} ms); "
                "nothing written")
        return removed

    def _try(self, removed: np.ndarray) -> dict:
        """Measure a cut and record it as an attempt."""
        predicted = 1.0 - self.model.reduction(removed)
        got = self.measure(removed)
        self.tried.append((removed, got))
        self.run.attempts.append({"predicted": round(predicted, 4),
                                  "achieved": round(got["ratio"], 4), "ms": got["ms"]})
        return got

    def _between(self, measured: list[tuple[np.ndarray, dict]], best, want: float):
        """Cuts between the slow cut and the fast cut measured closest to the target: the slow
        one with the first k of the groups where they differ taken from the fast one (the
        groups that save most by the latency model first), k bisected by measurement. Then,
        if none of those measured within the band (they differ in a block and a group or two),
        the same from the original (the fast cut's blocks with fewer of its channels)."""
        none = np.zeros(self.analysis.num_units, bool)
        slow = [m for m in measured if m[1]["ratio"] > want]
        fast = [m for m in measured if m[1]["ratio"] <= want]
        if not fast:
            return best
        hi_cut = max(fast, key=lambda m: m[1]["ratio"])[0]
        ends = [min(slow, key=lambda m: m[1]["ratio"])[0]] if slow else []
        tries = MIX_TRIES
        for lo_cut in [*ends, none]:
            items = differing(self.analysis, lo_cut, hi_cut)
            if len(items) < 2:
                continue
            saving = [self.model.ms(lo_cut) - self.model.ms(mixed(lo_cut, hi_cut, [i]))
                      for i in items]
            items = [items[i] for i in np.argsort(saving)[::-1]]
            lo, hi = 0, len(items)  # lo: measured slow, hi: measured fast
            while tries and hi - lo > 1:
                tries -= 1
                k = (lo + hi) // 2
                removed = self.analysis.enforce_links(mixed(lo_cut, hi_cut, items[:k]))
                got = self._try(removed)
                if _better(got["ratio"], best[1]["ratio"], want):
                    best = (removed, got)
                if _within(got["ratio"], want):
                    return best
                lo, hi = (k, hi) if got["ratio"] > want else (lo, k)
        return best


def _choose(tried: list, best, want: float, quality) -> tuple[tuple, str]:
    """(the cut to keep, why): ``best`` when it measures within the band or over the target
    (closest); when it measures faster than the band, the cut measured faster than the target
    that ``quality`` scores best (the closest of equals), as any of them meets the latency
    asked and none the band."""
    if _within(best[1]["ratio"], want):
        return best, "band"
    if quality is None or best[1]["ratio"] > want:
        return best, "closest"
    fast = [c for c in tried if c[1]["ratio"] <= want]
    scored = [(quality(r), m["ratio"], i) for i, (r, m) in enumerate(fast)]
    return fast[max(scored)[2]], "metric"


def differing(analysis: ChannelAnalysis, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """The units where cuts ``a`` and ``b`` differ, by whole groups (either cut's choice for a
    group is valid) and lone units (blocks)."""
    diff, groups = np.asarray(a) != np.asarray(b), np.asarray(analysis.unit_group)
    items = [np.flatnonzero(groups == g) for g in np.unique(groups[diff & (groups >= 0)])]
    return items + [np.array([u]) for u in np.flatnonzero(diff & (groups < 0))]


def mixed(a: np.ndarray, b: np.ndarray, items: Sequence[np.ndarray]) -> np.ndarray:
    """Cut ``a`` with ``items`` (unit arrays) as cut ``b`` has them."""
    out = np.array(a, dtype=bool)
    for units in items:
        out[units] = b[units]
    return out


def _within(ratio: float, want: float) -> bool:
    return abs(ratio - want) <= TOLERANCE * want


def _next(points: list[tuple[float, float]], want: float) -> float | None:
    """The reduction to ask next: between the least cut measured fast enough and the largest
    cut below it (measured too slow, or none at all), else a step past the largest cut. Cuts
    need not measure monotonically (some widths run slower than wider ones): a fast cut far
    under the target is approached from below, never left for larger cuts that measure slow."""
    fast = [p for p in points if p[1] <= want]
    if not fast:
        slow = max(points, key=lambda p: p[0])
        if slow[0] >= 0.99:
            return None
        return float(min(0.99, slow[0] + max(slow[1] - want, 0.01)))
    hi = min(fast, key=lambda p: p[0])
    slow = max((p for p in points if p[0] < hi[0]), key=lambda p: p[0], default=(0.0, 1.0))
    q = slow[0] + (hi[0] - slow[0]) * (slow[1] - want) / max(slow[1] - hi[1], 1e-12)
    return float(np.clip(q, slow[0] + 1e-3, hi[0] - 1e-3)) if hi[0] - slow[0] > 2e-3 else None


def _better(ratio: float, best: float, want: float) -> bool:
    """Within the target (or closer to it from above) beats over it; then the least cut."""
    ok, best_ok = ratio <= want * (1 + TOLERANCE), best <= want * (1 + TOLERANCE)
    if ok != best_ok:
        return ok
    return abs(ratio - want) < abs(best - want)


def _fraction(asked: str, original_ms: float) -> float:
    if asked.endswith("ms"):
        return float(asked[:-2]) / original_ms
    if asked.endswith("s"):
        return float(asked[:-1]) * 1e3 / original_ms
    return float(asked)


def _random(t: gs.Tensor) -> np.ndarray:
    rng = np.random.default_rng(0)
    dtype = np.dtype(t.dtype) if t.dtype is not None else np.dtype(np.float32)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(t.shape).astype(dtype)
    return rng.integers(0, 2, t.shape).astype(dtype)
