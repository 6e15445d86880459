"""Where candidate masks are evaluated: in this process, a local process pool, or Ray.

Every worker builds its own evaluator once (the gated model, its onnxruntime session, the
calibration data) and then scores chunks of candidate masks; results come back in order, so
a search gives the same answer whatever runs it.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from ..errors import UsageError

EXECUTORS = ("local", "process", "ray")
_WORKER = None  # the evaluator of a process-pool worker


def _payload(ev) -> tuple:
    """What a worker needs to rebuild the evaluator (the metric travels by name)."""
    return (ev.reference_bytes, ev.analysis, ev.calib, ev.metric.name, ev.max_rows, ev.reads,
            ev.costs, ev.prefixes is not False)


def _build(payload):
    import onnx

    from .evaluate import Evaluator
    from .quality import get_metric

    model_bytes, analysis, calib, metric, max_rows, reads, costs, prefixes = payload
    # one core per worker: workers run side by side
    return Evaluator(onnx.load_from_string(model_bytes), analysis, calib, get_metric(metric),
                     max_rows=max_rows, threads=1, reads=reads, costs=costs, prefixes=prefixes)


def _init_worker(payload) -> None:
    global _WORKER
    _WORKER = _build(payload)


def _evaluate_chunk(masks: np.ndarray) -> np.ndarray:
    return _WORKER.evaluate_local(masks)


class ProcessPool:
    def __init__(self, ev, workers: int | None = None):
        self.workers = workers or os.cpu_count() or 1
        self.pool = ProcessPoolExecutor(self.workers, initializer=_init_worker,
                                        initargs=(_payload(ev),))

    def map(self, masks: np.ndarray) -> np.ndarray:
        chunks = np.array_split(masks, min(self.workers, len(masks)))
        return np.concatenate(list(self.pool.map(_evaluate_chunk, chunks)))

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class RayPool:
    """Ray actors, each holding one evaluator (the gated model is shipped once per actor)."""

    def __init__(self, ev, workers: int | None = None, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'onnxprune[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                     include_dashboard=False)
        self.ray = ray
        workers = workers or int(ray.available_resources().get("CPU", 1)) or 1
        actor = ray.remote(num_cpus=1)(_Actor)
        payload = ray.put(_payload(ev))
        self.actors = [actor.remote(payload) for _ in range(workers)]

    def map(self, masks: np.ndarray) -> np.ndarray:
        chunks = np.array_split(masks, min(len(self.actors), len(masks)))
        refs = [a.evaluate.remote(c) for a, c in zip(self.actors, chunks, strict=False)]
        return np.concatenate(self.ray.get(refs))

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)


class _Actor:
    def __init__(self, payload):
        self.ev = _build(payload)

    def evaluate(self, masks: np.ndarray) -> np.ndarray:
        return self.ev.evaluate_local(masks)


def make_pool(kind: str, ev, workers: int | None = None, address: str | None = None):
    if kind not in EXECUTORS:
        raise UsageError(f"--executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    if kind == "local":
        return None
    if kind == "process":
        return ProcessPool(ev, workers)
    return RayPool(ev, workers, address)
