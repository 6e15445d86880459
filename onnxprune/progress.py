"""Progress on long work, off unless a front end turns it on.

Two ways to show it: rich bars on a terminal, or (stderr piped to a file or a CI log) one
line every few seconds from a heartbeat thread, naming the pass, the task's count, its rate
and an estimate of the time left, so that minutes of search never pass in silence.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

MODES = ("off", "bars", "lines")
INTERVAL = float(os.environ.get("ONNXPRUNE_PROGRESS_INTERVAL", "10"))  # seconds between lines
_mode = "off"
_state: dict = {"pass": None, "task": None, "done": 0, "total": None, "start": 0.0,
                "status": "", "run_start": 0.0, "at_most": False}
_lock = threading.Lock()


def enable(on: bool | str = True) -> None:
    """``True``/"bars": rich bars; "lines": periodic lines; ``False``/"off": nothing."""
    global _mode
    _mode = {True: "bars", False: "off"}.get(on, on)  # type: ignore[arg-type]
    if _mode not in MODES:
        raise ValueError(f"progress mode must be one of {MODES}, got {on!r}")


def mode() -> str:
    return _mode


def set_pass(name: str | None) -> None:
    """The pass now running (shown by progress lines)."""
    with _lock:
        _state["pass"] = name


def clock(seconds: float) -> str:
    """H:MM:SS."""
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def status_line(now: float | None = None) -> str:
    """What a progress line says now: elapsed time, pass, task count, rate, time left."""
    now = time.perf_counter() if now is None else now
    with _lock:
        st = dict(_state)
    parts = [f"onnxprune: {clock(now - st['run_start'])}"]
    if st["pass"]:
        parts.append(f"pass {st['pass']}")
    if st["task"]:
        done, total = st["done"], st["total"]
        rate = done / max(now - st["start"], 1e-9)
        bound = "at most " if st["at_most"] else ""  # work that may stop early
        count = f"{done}/{bound}{total}" if total else f"{done}"
        text = f"{st['task']} {count} ({rate:.3g}/s"
        if total and done and rate > 0 and done < total:  # an estimate passed: no ETA
            text += f", ETA {bound}{clock((total - done) / rate)}"
        parts.append(text + ")")
        if st["status"]:
            parts.append(st["status"])
    return ", ".join(parts)


@contextlib.contextmanager
def heartbeat(interval: float | None = None, stream=None) -> Iterator[None]:
    """In "lines" mode, print ``status_line()`` every ``interval`` seconds until the block ends."""
    if _mode != "lines":
        yield
        return
    stream = stream or sys.stderr
    interval = INTERVAL if interval is None else interval
    stop = threading.Event()
    with _lock:
        _state.update({"run_start": time.perf_counter(), "task": None, "pass": None})

    def beat() -> None:
        while not stop.wait(interval):
            print(status_line(), file=stream, flush=True)

    thread = threading.Thread(target=beat, name="onnxprune-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=1.0)


@contextlib.contextmanager
def task(description: str, total: int | None, at_most: bool = False
         ) -> Iterator[Callable[..., None]]:
    """``with task("sensitivity", 120) as advance: ... advance(1)`` (``advance(n, status)``
    may also say how it is going, e.g. a loss; ``advance(0, total=N)``: a total estimated
    once the work is under way, or None for one not known yet). ``at_most``: ``total`` is a
    bound the work may stop well before (early stopping): the count and the time left say
    "at most"."""
    if _mode == "off":
        yield lambda n=1, status=None, total=None: None
        return
    with _lock:
        _state.update(task=description, done=0, total=total, start=time.perf_counter(),
                      status="", at_most=at_most)

    def record(n: int = 1, status: str | None = None, total: int | None = None) -> None:
        with _lock:
            _state["done"] += n
            if status is not None:
                _state["status"] = status
            if total is not None:
                _state["total"] = total

    try:
        if _mode == "lines":
            yield record
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                      TextColumn("{task.fields[status]}"), transient=True,
                      console=Console(stderr=True)) as bar:
            shown = f"{description} (at most {total})" if at_most and total else description
            tid = bar.add_task(shown, total=total, status="")

            def advance(n: int = 1, status: str | None = None, total: int | None = None) -> None:
                record(n, status, total)
                bar.update(tid, advance=n, **({"status": status} if status is not None else {}),
                           **({"total": total} if total is not None else {}))

            yield advance
    finally:
        with _lock:
            _state.update(task=None, status="", at_most=False)
