"""Where latencies are measured: here (``LocalTimer``) or on a device over SSH
(``RemoteTimer``, ``--target-host``). Both time models alternately with the same loop and
the same session settings (``bench/on_device.py``) and say which device they measure on
(the latency tables' cache key)."""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from ..bench.remote import Host
from ..ir.runtime import session
from ..ir.weights import Skeleton, embed
from .device import fingerprint
from .measure import summary, timed


class LocalTimer:
    """Sessions in this process."""

    def __init__(self, provider: str = "CPUExecutionProvider", threads: int | None = None):
        self.provider, self.threads = provider, threads
        self.device = fingerprint(provider, threads)
        self.where = "here"
        self._kept: dict[int, tuple] = {}  # id -> (model, its session): models timed again

    def _session(self, model, keep: bool):
        if id(model) in self._kept:
            return self._kept[id(model)][1]
        s = session(model, [self.provider], self.threads, quiet=True, optimized=True,
                    spinning=False)
        if keep:
            self._kept[id(model)] = (model, s)
        return s

    def time(self, models: Sequence[onnx.ModelProto | Skeleton], feeds: Sequence[dict],
             seconds: float, rounds: int = 200, groups: Sequence[Sequence[int]] | None = None,
             keep: Sequence[int] = ()) -> list[dict]:
        """``measure.summary`` of each model on its feeds; the models of a group (default:
        all) are timed alternately, ``seconds`` each, at most ``rounds`` rounds. ``keep``:
        the models (indices) that will be timed again (their sessions are kept)."""
        out: list[dict | None] = [None] * len(models)
        for group in groups or [range(len(models))]:
            sessions = [self._session(models[i], i in keep) for i in group]
            for i, s in zip(group, timed(sessions, [feeds[i] for i in group],
                                         seconds * len(group), rounds), strict=True):
                out[i] = s
            del sessions
        return out


class RemoteTimer:
    """The device behind an open ``bench.remote.Host``: models are sent there (each once)."""

    def __init__(self, host: Host, provider: str = "CPUExecutionProvider",
                 threads: int | None = None):
        self.host, self.provider, self.threads = host, provider, threads
        info = host.info()
        self.device = {"provider": provider, "processor": info["processor"],
                       "cpus": info["cpus"], "threads": threads or 0,
                       "onnxruntime": info["onnxruntime"]}
        self.where = host.spec

    def time(self, models, feeds, seconds: float, rounds: int = 200, groups=None,
             keep=()) -> list[dict]:
        """As ``LocalTimer.time``; every model is sent once (``keep`` changes nothing)."""
        data = [(embed(m) if isinstance(m, Skeleton) else m).SerializeToString()
                for m in models]
        times = self.host.time(data, list(feeds),
                               groups=[list(g) for g in groups] if groups else None,
                               providers=[self.provider], threads=self.threads, warmup=10,
                               seconds=seconds, min_rounds=5, max_rounds=rounds)
        return [summary(t) for t in times]


def timer(provider: str, host: Host | None = None, threads: int | None = None):
    """The timer of ``provider`` here, or on ``host`` when one is open."""
    return LocalTimer(provider, threads) if host is None else RemoteTimer(host, provider,
                                                                         threads)
