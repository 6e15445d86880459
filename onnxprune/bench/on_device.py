"""Timing on the device that will run the model: ONNX models run alternately, round after
round, with onnxruntime. ``onnxprune.bench.remote`` sends this file to a device over SSH and
runs it there with the device's Python; onnxprune's own local measurements use the same
functions. So it is self-contained: the standard library, numpy and onnxruntime only.

    python3 on_device.py JOB.json
    python3 on_device.py --device     (what ``device_info`` says of it)

JOB: ``{"models": [.onnx files], "feeds": [.npz files, one per model], "groups": [[model
indices timed alternately], ...] (default: all in one), "providers": [onnxruntime provider
names], "threads": N or null, "warmup": N, "repeat": N or null, "seconds": S (per model),
"min_rounds": N, "max_rounds": N or null}``. Prints one line of JSON: ``{"device": ...,
"times_ns": [[per-run times] per model]}``. Exit codes: 0; ``NO_RUNTIME`` when numpy or
onnxruntime cannot be imported; ``NO_PROVIDER`` when the first provider is not available;
``MODEL_FAILS`` when a model does not run (the reason on stderr).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

NO_RUNTIME, NO_PROVIDER, MODEL_FAILS = 20, 21, 22


def processor() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict:
    """What a latency measured here depends on (and is cached by)."""
    import onnxruntime as ort

    return {"processor": processor(), "cpus": os.cpu_count(), "onnxruntime": ort.__version__,
            "providers": ort.get_available_providers(), "python": platform.python_version(),
            "platform": platform.platform(), "machine": platform.machine()}


def session_options(threads: int | None = None, spinning: bool = False):
    """Deployment settings: every graph optimization; intra-op threads that sleep between
    runs unless ``spinning`` (sessions timed alternately do not spin against each other)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    return opts


def alternate(runs: list, warmup: int = 10, repeat: int | None = None,
              seconds: float = 1.0, min_rounds: int = 5, max_rounds: int | None = None
              ) -> list[list[int]]:
    """Nanoseconds of each call of ``runs`` (callables), called in turn round after round:
    ``repeat`` rounds, or until ``seconds`` per callable have passed (at least ``min_rounds``,
    at most ``max_rounds``), after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        for run in runs:
            run()
    times: list[list[int]] = [[] for _ in runs]
    clock, budget = time.perf_counter_ns, seconds * len(runs) * 1e9
    start, rounds = clock(), 0
    while True:
        for run, out in zip(runs, times):  # noqa: B905 - the device may run Python < 3.10
            t = clock()
            run()
            out.append(clock() - t)
        rounds += 1
        if repeat:
            if rounds >= repeat:
                break
        elif (rounds >= min_rounds and clock() - start >= budget) or (
                max_rounds and rounds >= max_rounds):
            break
    return times


def run_job(job: dict) -> list[list[int]]:
    """The times of ``job``'s models (files or serialized bytes) on their feeds (npz files or
    dicts of arrays), group by group."""
    import numpy as np
    import onnxruntime as ort

    providers = list(job.get("providers") or ["CPUExecutionProvider"])
    if providers[0] not in ort.get_available_providers():
        raise LookupError(f"{providers[0]} is not available (onnxruntime {ort.__version__} "
                          f"offers {', '.join(ort.get_available_providers())})")
    models, feeds = job["models"], job["feeds"]
    groups = job.get("groups") or [list(range(len(models)))]
    out: list[list[int]] = [[] for _ in models]
    for group in groups:
        runs = []
        for i in group:
            sess = ort.InferenceSession(models[i], session_options(job.get("threads")),
                                        providers=providers)
            f = feeds[i]
            f = dict(np.load(f)) if isinstance(f, str) else f
            runs.append(lambda s=sess, f=f: s.run(None, f))
        times = alternate(runs, job.get("warmup", 10), job.get("repeat"),
                          job.get("seconds", 1.0), job.get("min_rounds", 5),
                          job.get("max_rounds"))
        for i, t in zip(group, times):  # noqa: B905 - as above
            out[i] = t
    return out


def main(argv: list[str]) -> int:
    try:
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        print(f"{sys.executable} cannot import {err.name}", file=sys.stderr)
        return NO_RUNTIME
    if argv[:1] == ["--device"]:
        print(json.dumps(device_info()))
        return 0
    folder = os.path.dirname(os.path.abspath(argv[0]))
    with open(argv[0], encoding="utf-8") as f:
        job = json.load(f)
    for key in ("models", "feeds"):
        job[key] = [os.path.join(folder, name) for name in job[key]]
    try:
        times = run_job(job)
    except LookupError as err:
        print(str(err), file=sys.stderr)
        return NO_PROVIDER
    except Exception as err:  # noqa: BLE001 - onnxruntime's errors, said in one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"a model does not run: {first}", file=sys.stderr)
        return MODEL_FAILS
    print(json.dumps({"device": device_info(), "times_ns": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
