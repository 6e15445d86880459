"""Progress bars for long searches (rich), off unless a front end turns them on."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

_enabled = False


def enable(on: bool = True) -> None:
    global _enabled
    _enabled = on


@contextlib.contextmanager
def task(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """``with task("sensitivity", 120) as advance: ... advance(1)``."""
    if not _enabled:
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=True, console=Console(stderr=True)) as bar:
        tid = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(tid, n)
