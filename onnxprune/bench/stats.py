"""Latency statistics of one model x provider x batch from its per-run times."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Latency:
    """Milliseconds per run (one run = one batch); throughput in samples per second."""

    runs: int
    p50: float
    p90: float
    p99: float
    mean: float
    throughput: float


def summarize(times_ns: Sequence[int], batch: int) -> Latency:
    """Percentiles (linear interpolation) and mean of run times; throughput = batch / mean."""
    if not times_ns:
        raise ValueError("no runs to summarize")
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    mean = float(ms.mean())
    return Latency(len(ms), p50, p90, p99, mean, batch * 1000.0 / mean)
