"""Resident memory of a run: sampled per pass, the kernel's high-water mark left alone."""

import sys
import time

import numpy as np
import pytest

from onnxprune.api import prune
from onnxprune.ir.memory import current_rss, kernel_hwm, peak_window
from onnxprune.zoo.builder import GraphBuilder

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_a_window_sees_an_allocation_freed_inside_it():
    with peak_window() as outer:
        with peak_window() as inner:
            a = np.ones(16_000_000)  # 128 MB, touched
            time.sleep(0.05)
            del a
        after = current_rss()
    assert inner.peak - after >= 96 * 2**20
    assert outer.peak >= inner.peak  # nested windows both see it


@linux
def test_a_run_leaves_the_kernel_high_water_mark_alone():
    """Outside tools (/usr/bin/time, getrusage) read VmHWM: a pipeline that reset it per pass
    made them report less than the run used."""
    a = np.ones(32_000_000)  # 256 MB above whatever the process holds now
    del a
    before = kernel_hwm()
    assert before - current_rss() >= 192 * 2**20
    b = GraphBuilder(seed=0)
    x = b.input("x", ["batch", 8])
    r = prune(b.build([b.gemm(b.relu(b.gemm(x, 8, 16)), 16, 4)]), ratio=0.5)
    assert kernel_hwm() >= before
    per_pass = r.memory["per_pass"]
    assert all(v is not None and v > 0 for v in per_pass.values())
    assert r.memory["peak_rss"] < before  # the run's own peak, not the process's lifetime one


def _mapped_bytes():
    """Bytes glibc holds in separately mapped blocks now (mallinfo2's hblkhd), or None."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        info = libc.mallinfo2
    except (OSError, AttributeError):
        return None

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
            ).split()]

    info.restype = Info
    return info().hblkhd


@pytest.mark.skipif(_mapped_bytes() is None, reason="glibc's allocator (mallinfo2) only")
def test_heap_reuse_serves_large_blocks_from_the_heap_and_restores_after():
    """A training step's tensors over 32 MB were mapped afresh and unmapped every step (page
    faults on each); inside heap_reuse they come from the heap, after it glibc maps them
    again as it does by default."""
    from onnxprune.ir.memory import heap_reuse

    size = 64 << 20
    with heap_reuse() as active:
        base = _mapped_bytes()
        a = np.ones(size // 8)
        inside = _mapped_bytes() - base
        del a
    assert active
    base = _mapped_bytes()
    b = np.ones(size // 8)
    after = _mapped_bytes() - base
    del b
    assert inside < size
    assert after >= size


@pytest.mark.parametrize("env", [{"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}])
def test_heap_reuse_leaves_a_threshold_the_user_set(monkeypatch, env):
    from onnxprune.ir.memory import heap_reuse

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with heap_reuse() as active:
        assert not active
