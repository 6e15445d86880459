"""This process's resident memory: now, its lifetime high-water mark, and the peak of a block
of work (sampled by a thread; exact where the block raised the lifetime mark). The kernel's high-water mark is never reset (tools outside the
process, ``/usr/bin/time`` and ``getrusage`` among them, read it: a reset makes them
under-report the run)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

_STATUS = "/proc/self/status"
_STATM = "/proc/self/statm"
INTERVAL = 0.005  # seconds between samples while a window is open


def _status(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (Linux), in bytes."""
    try:
        with open(_STATUS) as f:
            match = re.search(rf"{field}:\s+(\d+) kB", f.read())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def kernel_hwm() -> int | None:
    """The kernel's RSS high-water mark of this process (Linux), in bytes."""
    return _status("VmHWM")


def current_rss() -> int | None:
    """Resident memory now, bytes (Linux: /proc/self/statm; elsewhere psutil if installed)."""
    try:
        with open(_STATM) as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def release() -> None:
    """Give the heap's freed memory back to the system (glibc's ``malloc_trim``; a no-op
    elsewhere), and the free regions of the search sessions' shared arena (``ir.arena``).
    glibc keeps what numpy and onnxruntime free in its heap, so resident memory overstates
    what is held (measured: 120 MB on reconstruction scores of a 0.1M-parameter Conv3d
    model) until this runs."""
    arena = sys.modules.get("onnxprune.ir.arena")  # (imported only with onnxruntime)
    if arena is not None:
        arena.shrink()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


# glibc's mallopt parameters, and the values its own dynamic threshold reaches at most
# (64-bit): an allocation above 32 MB is mapped afresh and unmapped when freed
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_MAX = 32 << 20
HEAP_REUSE = 1 << 30  # in heap_reuse(): allocations up to this come from the heap


@contextlib.contextmanager
def heap_reuse() -> Iterator[bool]:
    """Large allocations served from the heap and kept there for reuse while the block runs
    (glibc; elsewhere nothing changes: yields False). glibc maps every allocation over
    32 MB afresh and unmaps it when freed, so a training step whose tensors are that large
    pays the kernel's page faults on each of them every step (PP-OCR rec's 48 MB outputs:
    its loss, gradient and targets took 0.91 s steps to 0.76). After the block the
    thresholds are those glibc's own dynamic ones reach (32 MB, trimming above 64 MB) and
    the heap's free memory goes back (``release``). A threshold the user set for the process
    (``MALLOC_MMAP_THRESHOLD_``, or glibc's tunables) is left as it is."""
    libc = _libc()
    chosen = "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get(
        "GLIBC_TUNABLES", "")
    if libc is None or chosen or not libc.mallopt(_M_MMAP_THRESHOLD, HEAP_REUSE):
        yield False
        return
    libc.mallopt(_M_TRIM_THRESHOLD, 2 * HEAP_REUSE)
    try:
        yield True
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_MAX)
        release()


def _libc():
    """glibc through ctypes (None elsewhere: musl, macOS, Windows)."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            lib = ctypes.CDLL("libc.so.6")
            _LIBC = lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else False
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC or None


_LIBC = None


class Window:
    """The highest resident memory seen while a :func:`peak_window` block ran (bytes)."""

    def __init__(self, start: int | None):
        self.peak = start

    def see(self, rss: int | None) -> None:
        if rss is not None and (self.peak is None or rss > self.peak):
            self.peak = rss


class _Sampler:
    """One daemon thread for the whole process, sampling while any window is open."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.windows: list[Window] = []
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()

    def open(self, window: Window) -> None:
        with self.lock:
            self.windows.append(window)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="onnxprune-rss",
                                               daemon=True)
                self.thread.start()

    def close(self, window: Window) -> None:
        with self.lock:
            self.windows.remove(window)

    def _run(self) -> None:
        while True:
            self.wake.wait(INTERVAL)
            rss = current_rss()
            with self.lock:
                if not self.windows:
                    self.thread = None
                    return
                for w in self.windows:
                    w.see(rss)


_SAMPLER = _Sampler()


@contextlib.contextmanager
def peak_window() -> Iterator[Window]:
    """``with peak_window() as w: ...`` then ``w.peak``: the highest RSS during the block,
    sampled every ``INTERVAL`` seconds and at both ends, or the process's lifetime high-water
    mark where the block raised it (exact; read, never reset). Otherwise a spike shorter than
    the interval can be missed. Windows may nest."""
    hwm = kernel_hwm()
    window = Window(current_rss())
    _SAMPLER.open(window)
    try:
        yield window
    finally:
        _SAMPLER.close(window)
        window.see(current_rss())
        now = kernel_hwm()
        if hwm is not None and now is not None and now > hwm:
            window.see(now)  # a new lifetime peak: reached inside the block
