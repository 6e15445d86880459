"""Interrupts that cannot be lost: SIGINT/SIGTERM set a flag as well as raising.

An interrupt that arrives inside native code (an onnxruntime session being built) may surface
as some other exception, or be swallowed by code that catches broad errors. The flag keeps it:
the pipeline checks it between passes and the writer checks it before committing a file, so
an interrupted run never writes a model and always exits with 128 + the signal's number.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_received: list[int] = []  # signal numbers seen while guarded
_settled: list[bool] = []  # set once the outcome is decided: later signals are ignored
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_holding: list[bool] = []  # open deferred() sections
_held: list[int] = []  # signals that arrived inside one, raised when it ends


class Interrupted(KeyboardInterrupt):
    """Raised for SIGINT or SIGTERM; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _handler(signum, frame) -> None:  # noqa: ANN001 - the signal module's signature
    if _settled:
        return
    _received.append(signum)
    if _holding:  # inside a critical section: raised when it ends
        _held.append(signum)
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def guarded(keep: bool = False) -> Iterator[None]:
    """Install the handlers for the duration (main thread only; elsewhere a no-op).

    ``keep`` (a process's entry point): leave them installed afterwards, ignoring signals, so
    that an interrupt during interpreter shutdown cannot change an exit code already decided
    (and matching what was written)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    _settled.clear()
    old = {s: signal.signal(s, _handler) for s in _SIGNALS}
    try:
        yield
    finally:
        if keep:
            _settled.append(True)
        else:
            for s, h in old.items():
                signal.signal(s, h)
            _received.clear()
            _held.clear()


def check() -> None:
    """Raise ``Interrupted`` if a signal arrived, even one whose exception was swallowed."""
    if _received:
        raise Interrupted(_received[0])


def pending() -> int | None:
    """The first signal received while guarded, if any."""
    return _received[0] if _received else None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for a short critical section (e.g. renaming a model and its
    data into place); they are delivered when it ends. Blocking them in this thread is not
    enough: the kernel hands a process's signal to any thread that does not block it (the
    memory sampler, onnxruntime's pools), and Python then runs the handler in the main
    thread at once; the handler holds what arrives while a section is open."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    _holding.append(True)
    try:
        yield
    finally:
        _holding.pop()
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if not _holding and _held:
            signum = _held[0]
            _held.clear()
            raise Interrupted(signum)
