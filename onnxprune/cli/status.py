"""What a command shows while it runs: progress on stderr (a spinner and bars on a terminal,
a line every few seconds otherwise) and onnxprune's warnings as one line each."""

from __future__ import annotations

import contextlib
import sys
import warnings

from rich.console import Console

from .. import progress
from ..errors import OnnxPruneWarning
from .outcome import CURRENT as _CURRENT

WARNINGS: list[str] = []  # the run's warnings, in order (also in --json output)


@contextlib.contextmanager
def warnings_to(err: Console):
    """onnxprune's warnings as one line each on stderr, each said once; others as usual."""
    WARNINGS.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("always", OnnxPruneWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, OnnxPruneWarning):
                return shown(message, category, filename, lineno, file, line)
            if str(message) not in WARNINGS:
                WARNINGS.append(str(message))
                err.print(f"onnxprune: warning: {message}", markup=False, highlight=False,
                          soft_wrap=True)

        warnings.showwarning = show
        yield


@contextlib.contextmanager
def status(what: str, quiet: bool = False):
    """Progress on stderr while ``what`` runs: a spinner naming the pass and rich bars on a
    terminal; a line every few seconds when stderr is a file or a pipe; nothing with
    ``--quiet``. Yields the callback passes report their names to."""
    mode = "off" if quiet else ("bars" if sys.stderr.isatty() else "lines")
    progress.enable(mode)

    def named(name: str) -> None:
        _CURRENT["pass"] = name
        progress.set_pass(name)

    _CURRENT["pass"] = None
    try:
        if mode != "bars":
            with progress.heartbeat():
                yield named
        else:
            with Console(stderr=True).status(f"{what}...") as status:
                def update(name: str) -> None:
                    named(name)
                    status.update(f"{what}: {name}...")

                yield update
        _CURRENT["pass"] = None  # finished: what fails after is no pass's (an error keeps it)
    finally:
        progress.enable("off")
