"""End-to-end latency: models timed alternately, round after round, so that drift on a noisy
machine hits every model alike; the median and the spread of each."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort


def timed(sessions: Sequence[ort.InferenceSession], feeds: Sequence[dict],
          seconds: float = 1.0, rounds: int = 200, warmup: int = 10) -> list[dict]:
    """Milliseconds per run of each session on its feeds: {"ms": median, "spread": the
    interquartile range over the median, "runs": count}; rounds until ``seconds`` passed."""
    for s, f in zip(sessions, feeds, strict=True):
        for _ in range(warmup):
            s.run(None, f)
    times: list[list[float]] = [[] for _ in sessions]
    start = time.perf_counter()
    for r in range(rounds):
        for i, (s, f) in enumerate(zip(sessions, feeds, strict=True)):
            t = time.perf_counter()
            s.run(None, f)
            times[i].append(time.perf_counter() - t)
        if r >= 4 and time.perf_counter() - start > seconds:
            break
    out = []
    for t in times:
        q1, med, q3 = np.percentile(np.array(t) * 1e3, [25, 50, 75])
        out.append({"ms": float(med), "spread": float((q3 - q1) / max(med, 1e-12)),
                    "runs": len(t)})
    return out
