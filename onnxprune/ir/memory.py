"""This process's resident memory high-water mark (Linux: the kernel's VmHWM, resettable;
elsewhere the lifetime peak from getrusage)."""

from __future__ import annotations

import re
import sys

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


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


def reset_kernel_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
    except OSError:
        return False
    return kernel_hwm() is not None


def peak_rss() -> int | None:
    """The high-water mark since the last reset (or the process's lifetime peak), bytes."""
    hwm = kernel_hwm()
    if hwm is not None:
        return hwm
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss() -> int | None:
    """Resident memory now (Linux), bytes."""
    return _status("VmRSS")
