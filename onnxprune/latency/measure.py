"""End-to-end latency: models timed alternately, round after round, so that drift on a noisy
machine hits every model alike; the median and the spread of each. The loop is the one the
device script runs (``bench/on_device.py``), here or on a remote device."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from ..bench.on_device import alternate


def summary(times_ns: Sequence[int]) -> dict:
    """{"ms": median, "spread": the interquartile range over the median, "runs": count}."""
    q1, med, q3 = np.percentile(np.asarray(times_ns, np.float64) / 1e6, [25, 50, 75])
    return {"ms": float(med), "spread": float((q3 - q1) / max(med, 1e-12)),
            "runs": len(times_ns)}


def timed(sessions: Sequence[ort.InferenceSession], feeds: Sequence[dict],
          seconds: float = 1.0, rounds: int = 200, warmup: int = 10) -> list[dict]:
    """``summary`` of each session's runs on its feeds, rounds until ``seconds`` passed (in
    all; at least 5 rounds, at most ``rounds``)."""
    runs = [lambda s=s, f=f: s.run(None, f) for s, f in zip(sessions, feeds, strict=True)]
    times = alternate(runs, warmup, None, seconds / max(len(runs), 1), 5, rounds)
    return [summary(t) for t in times]
