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
_runs: list = []  # the onnxruntime RunOptions long runs take while guarded (run_options())


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
    watch = _Watcher()
    try:
        yield
    finally:
        try:
            watch.close()  # (a pending signal's handler may raise here: the rest still runs)
        finally:
            if keep:
                _settled.append(True)
            else:
                for s, h in old.items():
                    signal.signal(s, h)
                _received.clear()
                _held.clear()


def run_options():
    """The RunOptions a long onnxruntime run takes while guarded (None otherwise): a signal
    terminates the run in progress at once. Python runs its handlers in the main thread only
    between bytecodes, so a signal arriving during a long run waited for it to end (5 s into a
    sensitivity search's batch of candidates); the watcher thread sets the run's terminate flag
    from the signal's wakeup byte instead, and the run raises, the interrupt is seen."""
    return _runs[0] if _runs else None


class _Watcher:
    """A thread woken by the C-level signal handler's byte (``signal.set_wakeup_fd``) that
    terminates the guarded run's onnxruntime runs."""

    def __init__(self):
        import socket

        import onnxruntime as ort

        self.options = ort.RunOptions()
        _runs[:] = [self.options]
        self.read, self.write = socket.socketpair()
        self.write.setblocking(False)
        self.old = signal.set_wakeup_fd(self.write.fileno(), warn_on_full_buffer=False)
        self.thread = threading.Thread(target=self._watch, name="onnxprune-signals",
                                       daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while True:
            try:
                data = self.read.recv(16)
            except OSError:
                return
            if not data:
                return
            if not _settled and any(b in _SIGNALS for b in data):
                self.options.terminate = True

    def close(self) -> None:
        signal.set_wakeup_fd(self.old)
        _runs.clear()
        for sock in (self.write, self.read):
            with contextlib.suppress(OSError):
                sock.shutdown(2)
            sock.close()


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
