"""Peak memory of a block of work: host RSS high-water, or CUDA device memory.

Both are deltas: memory at the high-water mark minus memory just before the block. They are
measured around session creation plus its first run, so they count the weights, the optimized
graph and the arena the first inference grows to.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import shutil
import subprocess
import sys

from ..ir.memory import peak_window


def host_memory_available() -> bool:
    """Host memory is measured with psutil (the ``bench`` extra)."""
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


def device_memory_available() -> bool:
    """Device memory is read from nvidia-smi."""
    return shutil.which("nvidia-smi") is not None


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def _release_free_heap() -> None:
    """Collect garbage and hand free heap pages back to the OS (glibc ``malloc_trim``), so a
    block reusing memory freed before it is still charged for what it allocates."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class HostPeak:
    """``with HostPeak() as m: ...`` then ``m.delta``: peak RSS during the block minus RSS before
    (bytes; None without psutil).

    Free heap is returned to the OS first (glibc), so the block cannot hide allocations in
    memory freed before it. The peak is ``ir.memory.peak_window``'s: sampled by a thread, exact
    where the block raised the process's lifetime high-water mark (never reset: outside tools
    read it), and always at least the RSS after the block, so what the block keeps allocated
    (weights, the arena) is counted even if a short spike is missed.
    """

    def __init__(self):
        self.delta: int | None = None
        self._block = None  # the peak_window context while the block runs

    def __enter__(self) -> HostPeak:
        if not host_memory_available():
            return self
        _release_free_heap()
        self._block = peak_window()
        self._seen = self._block.__enter__()
        self._before = self._seen.peak
        return self

    def __exit__(self, *exc) -> None:
        if self._block is None:
            return
        self._block.__exit__(*exc)
        self.delta = max(0, self._seen.peak - self._before)


def _nvidia_smi(*query: str) -> list[list[str]] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *query, "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=15, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]


def gpu_memory(device: int = 0) -> tuple[int, int] | None:
    """(bytes this process holds on any GPU, bytes used on ``device``) from nvidia-smi."""
    apps = _nvidia_smi("--query-compute-apps=pid,used_memory")
    total = _nvidia_smi("--query-gpu=memory.used", f"--id={device}")
    if apps is None or not total:
        return None
    pid = str(os.getpid())
    mine = sum(int(row[1]) for row in apps if len(row) == 2 and row[0] == pid and row[1].isdigit())
    return mine * 2**20, int(total[0][0]) * 2**20


class DevicePeak:
    """``with DevicePeak() as m: ...`` then ``m.delta`` (bytes, None without nvidia-smi).

    onnxruntime's CUDA arena only grows, so the memory held after the block is its high-water
    mark. The per-process figure is used when nvidia-smi lists this process (it does not in
    some containers); otherwise the device-wide figure, which other processes can disturb.
    """

    def __init__(self, device: int = 0):
        self.device = device
        self.delta: int | None = None

    def __enter__(self) -> DevicePeak:
        self._before = gpu_memory(self.device)
        return self

    def __exit__(self, *exc) -> None:
        after = gpu_memory(self.device) if self._before is not None else None
        if self._before is None or after is None:
            return
        own = after[0] - self._before[0]
        self.delta = max(0, own if after[0] > 0 else after[1] - self._before[1])
