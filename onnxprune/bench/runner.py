"""Measure models on onnxruntime execution providers: latency, throughput, memory, MACs.

Measurement, per provider and batch (a *group*):

1. a session per model is created (memory is measured around its creation and first run);
2. ``warmup`` untimed rounds, then timed rounds. A round runs every model once, in the order
   given (A B A B ...), so drift (thermal, frequency scaling, other load) hits all equally
   and every model gets the same number of runs;
3. with ``repeat`` the group does that many rounds; with ``seconds`` it runs until
   ``seconds x number of models`` have passed (at least ``MIN_ROUNDS`` rounds), i.e. about
   ``seconds`` per model.

Random inputs are made once per model and batch (the same seed, so models with the same
inputs get the same data). Sessions are released before the next group.
"""

from __future__ import annotations

import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import UnsupportedModelError, UsageError
from ..ir.runtime import session
from ..ir.shapes import choose_shapes, parse_values
from .memory import device_memory_available, host_memory_available
from .providers import Provider, Session, open_session, resolve_providers
from .remote import Host
from .remote_bench import device_providers, measure_remote
from .report import BenchReport, BenchRow, compare_to_original
from .stats import summarize
from .workload import BenchModel, at_batch, check_shape_names, load_models

DEFAULT_SECONDS = 3.0
MIN_ROUNDS = 5
PROGRESS_INTERVAL = 0.1  # seconds between progress callbacks within a phase


@dataclass(frozen=True)
class Progress:
    """Where the measurement is: ``phase`` is "session", "warmup" or "measure"."""

    phase: str
    provider: str
    batch: int
    model: str | None  # the model whose session is being created (phase "session")
    round: int
    rounds: int | None  # known for warmup and with ``repeat``; None for a time budget


class _Ticker:
    """Forwards progress at most every PROGRESS_INTERVAL seconds (and on every phase change)."""

    def __init__(self, callback: Callable[[Progress], None] | None):
        self.callback = callback
        self.last = (None, 0.0)

    def __call__(self, p: Progress) -> None:
        if self.callback is None:
            return
        now = time.perf_counter()
        key = (p.phase, p.provider, p.batch, p.model)
        if key != self.last[0] or now - self.last[1] >= PROGRESS_INTERVAL:
            self.last = (key, now)
            self.callback(p)


def _stderr_notice(message: str) -> None:
    print(f"onnxprune: {message}", file=sys.stderr)


def run_bench(
    models: Sequence[str | Path | onnx.ModelProto],
    providers: Sequence[str] = ("cpu",),
    batches: Sequence[int] = (1,),
    threads: int | None = None,
    warmup: int = 10,
    repeat: int | None = None,
    seconds: float | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    input_values: Mapping[str, object] | Sequence[str] | None = None,
    progress: Callable[[Progress], None] | None = None,
    notice: Callable[[str], None] | None = None,
    names: Sequence[str | None] | None = None,
    host: str | None = None,
) -> BenchReport:
    """Benchmark ``models`` (the first is the original) on every provider and batch.

    ``providers``: "cpu", "cuda", "tensorrt". ``repeat`` (timed rounds) and ``seconds`` (time
    per model, default 3) are exclusive. ``input_shapes`` gives shapes for inputs with dynamic
    dimensions other than the batch (the others are chosen as verification chooses them,
    ``ir.shapes``); ``input_values`` pins inputs (``sr=16000``). ``notice`` receives one-line notices (skipped providers
    or batches; default: stderr); they are also kept in the report. ``names``: what the
    report calls each model (default: its file name, or a model's graph name). ``host``:
    ``USER@HOST[:PORT]``, a device the models are measured on over SSH (``bench.remote``).
    """
    repeat, seconds = _budget(repeat, seconds)
    batches = _positive_ints(batches, "batch")
    if warmup < 0:
        raise UsageError(f"warmup must be >= 0, got {warmup}")
    if threads is not None and threads < 1:
        raise UsageError(f"threads must be >= 1, got {threads}")
    if not models:
        raise UsageError("no model to benchmark")
    notices: list[str] = []

    def note(message: str) -> None:
        notices.append(message)
        (notice or _stderr_notice)(message)

    args = (models, names, providers, batches, threads, warmup, repeat, seconds, input_shapes,
            input_values, progress, note)
    if host is not None:
        with Host(host) as device:
            rows, specs, loaded, input_shapes, pinned = _measure(*args, device)
        info = device.info()
        environment = {"onnxruntime": info["onnxruntime"],
                       "available_providers": info["providers"], "python": info["python"],
                       "platform": info["platform"], "machine": info["machine"],
                       "cpu_count": info["cpus"], "processor": info["processor"],
                       "host": host}
    else:
        rows, specs, loaded, input_shapes, pinned = _measure(*args, None)
        environment = _environment()
    settings = {
        "providers": [p.name for p in specs], "batches": batches, "threads": threads,
        "warmup": warmup, "repeat": repeat, "seconds": seconds,
        "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()},
        "input_values": {k: np.asarray(v).tolist() for k, v in pinned.items()},
    }
    return BenchReport(compare_to_original(rows, loaded[0].name), [m.name for m in loaded],
                       settings, environment, notices)


def _measure(models, names, providers, batches, threads, warmup, repeat, seconds,
             input_shapes, input_values, progress, note, device: Host | None) -> tuple:
    """(rows, providers measured, loaded models, input shapes, pinned inputs)."""
    if device is not None:
        specs = device_providers(device, providers, note)
    else:
        specs = resolve_providers(providers, note)
        if any(not p.device for p in specs) and not host_memory_available():
            note("psutil is not installed: host peak memory is not measured "
                 "(pip install 'onnxprune[bench]')")
        if any(p.device for p in specs) and not device_memory_available():
            note("nvidia-smi not found: GPU peak memory is not measured")
    loaded = load_models(models, names)
    check_shape_names(loaded, input_shapes)
    pinned = parse_values(input_values, loaded[0].proto)
    input_shapes = _with_chosen_shapes(loaded[0], input_shapes, pinned)
    tick = _Ticker(progress)
    rows: list = []
    for provider in specs:
        if device is None:
            provider.prime(threads)
        for batch in batches:
            if device is not None:
                tick(Progress("measure", provider.name, batch, None, 0, repeat))
                rows += measure_remote(device, loaded, provider, batch, threads, warmup,
                                       repeat, seconds, input_shapes, pinned, note, MIN_ROUNDS)
            else:
                rows += _measure_group(loaded, provider, batch, threads, warmup, repeat,
                                       seconds, input_shapes, pinned, tick, note)
    return rows, specs, loaded, input_shapes, pinned


def _with_chosen_shapes(model, given, pinned) -> dict[str, list[int]]:
    """The given shapes, and for inputs with dynamic non-batch dimensions the first set of
    shapes the model runs at (``ir.shapes``), their batch left to each measurement."""
    given = {k: list(v) for k, v in (given or {}).items()}
    needs = [i for i in model.inputs if i.name not in given and i.name not in pinned
             and any(d is None for d in i.dims[1:])]
    if not needs:
        return {**given, **{k: list(np.shape(v)) for k, v in pinned.items()}}
    sess = session(model.proto, quiet=True)

    def runs(feeds) -> bool:
        try:
            sess.run(None, feeds)
            return True
        except Exception:  # noqa: BLE001 - not a size the model takes
            return False

    chosen = choose_shapes(model.proto, given=given, pinned=pinned, count=1, runs=runs)[0]
    return {**chosen, **{k: list(np.shape(v)) for k, v in pinned.items()}}


def _measure_group(models: list[BenchModel], provider: Provider, batch: int,
                   threads: int | None, warmup: int, repeat: int | None, seconds: float | None,
                   input_shapes, pinned, tick: _Ticker,
                   note: Callable[[str], None]) -> list[BenchRow]:
    sessions: list[tuple[BenchModel, Session, int, int | None]] = []
    for model, shapes, feeds in at_batch(models, batch, input_shapes, pinned, note):
        tick(Progress("session", provider.name, batch, model.name, 0, None))
        with provider.memory_probe() as memory:
            session = _open(model, provider, feeds, threads)
        sessions.append((model, session, model.macs(shapes), memory.delta))
    if not sessions:
        return []
    runs = [s.run for _, s, _, _ in sessions]
    for r in range(warmup):
        tick(Progress("warmup", provider.name, batch, None, r + 1, warmup))
        for run in runs:
            run()
    times: list[list[int]] = [[] for _ in runs]
    clock, budget = time.perf_counter_ns, (seconds or 0.0) * len(runs) * 1e9
    start, rounds = clock(), 0
    while True:
        for run, out in zip(runs, times, strict=True):
            t0 = clock()
            run()
            out.append(clock() - t0)
        rounds += 1
        tick(Progress("measure", provider.name, batch, None, rounds, repeat))
        if repeat:
            if rounds >= repeat:
                break
        elif rounds >= MIN_ROUNDS and clock() - start >= budget:
            break
    rows = []
    for (model, _, macs, peak), ts in zip(sessions, times, strict=True):
        lat = summarize(ts, batch)
        rows.append(BenchRow(model.name, provider.name, batch, lat.runs, lat.p50, lat.p90,
                             lat.p99, lat.mean, lat.throughput, macs, model.params, peak,
                             params_by_type=model.params_by_type,
                             weight_bytes=model.weight_bytes))
    del sessions, runs
    gc.collect()
    return rows


def _open(model: BenchModel, provider: Provider, feeds, threads: int | None) -> Session:
    """Create the session and run it once (lazy initialization, the arena's first growth)."""
    try:
        session = open_session(model, provider, feeds, threads)
        session.run()
    except Exception as err:
        if not type(err).__module__.startswith("onnxruntime"):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsupportedModelError(
            f"{model.name} does not run on {provider.name}: {first}") from err
    return session


def _budget(repeat: int | None, seconds: float | None) -> tuple[int | None, float | None]:
    if repeat is not None and seconds is not None:
        raise UsageError("give either repeat or seconds, not both")
    if repeat is not None:
        if repeat < 1:
            raise UsageError(f"repeat must be >= 1, got {repeat}")
        return repeat, None
    seconds = DEFAULT_SECONDS if seconds is None else seconds
    if not seconds > 0:
        raise UsageError(f"seconds must be > 0, got {seconds}")
    return None, float(seconds)


def _positive_ints(values: Sequence[int], what: str) -> list[int]:
    out = list(dict.fromkeys(int(v) for v in values))
    if not out or any(v < 1 for v in out):
        raise UsageError(f"{what} sizes must be positive integers, got {list(values)}")
    return out


def _environment() -> dict[str, object]:
    return {
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
