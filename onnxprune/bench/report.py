"""Benchmark results: one row per model x provider x batch, compared with the original.

The first model is the original. ``speedup`` = original p50 / model p50 (same provider and
batch); ``mac_reduction`` = original MACs / model MACs; ``efficiency`` = speedup /
mac_reduction: 1.0 means the latency fell exactly as much as the MAC count, below 1 that
removed MACs bought less time (memory-bound layers, fixed overheads, kernel choice).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

ROW_KEYS = ("model", "provider", "batch", "p50", "p90", "p99", "mean", "throughput", "macs",
            "params", "params_by_type", "weight_bytes", "peak_mem", "speedup", "efficiency")


@dataclass(frozen=True)
class BenchRow:
    """Latencies in ms per run of one batch; throughput in samples/s; macs per run (the whole
    batch); params per element type and the bytes they take; peak_mem in bytes (None when it
    cannot be measured)."""

    model: str
    provider: str
    batch: int
    runs: int
    p50: float
    p90: float
    p99: float
    mean: float
    throughput: float
    macs: int
    params: int
    peak_mem: int | None
    speedup: float | None = None
    mac_reduction: float | None = None
    efficiency: float | None = None
    params_by_type: dict[str, int] | None = None
    weight_bytes: int | None = None


def compare_to_original(rows: list[BenchRow], original: str) -> list[BenchRow]:
    """Fill speedup, MAC reduction and efficiency against ``original`` at each provider/batch."""
    base = {(r.provider, r.batch): r for r in rows if r.model == original}
    out = []
    for r in rows:
        ref = base.get((r.provider, r.batch))
        if ref is None:
            out.append(r)
            continue
        speedup = ref.p50 / r.p50 if r.p50 > 0 else None
        reduction = ref.macs / r.macs if r.macs > 0 and ref.macs > 0 else None
        efficiency = speedup / reduction if speedup is not None and reduction else None
        out.append(replace(r, speedup=speedup, mac_reduction=reduction, efficiency=efficiency))
    return out


@dataclass(frozen=True)
class BenchReport:
    rows: list[BenchRow]
    models: list[str]  # in the order given; the first is the original
    settings: dict[str, Any]
    environment: dict[str, Any]
    notices: list[str]

    @property
    def original(self) -> str:
        return self.models[0]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; ``results`` holds one object per model x provider x batch."""
        return {
            "original": self.original,
            "models": list(self.models),
            "results": [asdict(r) for r in self.rows],
            "settings": dict(self.settings),
            "environment": dict(self.environment),
            "notices": list(self.notices),
        }
