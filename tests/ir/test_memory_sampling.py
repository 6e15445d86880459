"""Resident memory of a run: sampled per pass, the kernel's high-water mark left alone."""

import os
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


def _faults_of_allocations(n: int = 6, mb: int = 64) -> int:
    """Minor page faults of allocating (glibc's malloc, as onnxruntime's allocator without an
    arena calls it), touching and freeing ``mb`` MB ``n`` times."""
    import ctypes
    import resource

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        ptr = libc.malloc(mb << 20)
        ctypes.memset(ptr, 1, mb << 20)  # every page faulted in once
        libc.free(ptr)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_heap_reuse_keeps_freed_blocks_for_the_next_run_and_then_gives_them_back(monkeypatch):
    """Inside ``heap_reuse`` a freed 64 MB block serves the next allocation (its pages stay
    mapped: faulted in once, not six times); after it, blocks are mapped and unmapped as
    before; under a memory cap it does nothing."""
    from onnxprune.ir import memory
    from onnxprune.search.memory import capped

    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    before = _faults_of_allocations()
    with memory.heap_reuse():
        with memory.heap_reuse():  # nested: one scope
            inside = _faults_of_allocations()
        assert memory._REUSE["depth"] == 1
    after = _faults_of_allocations()
    assert before > 4 * pages and after > 4 * pages  # each allocation faults its pages in
    assert inside < 2 * pages, (before, inside, after)
    released = []
    monkeypatch.setattr(memory, "release", lambda: released.append(1))
    with capped(1 << 40), memory.heap_reuse():
        capped_faults = _faults_of_allocations()
    assert capped_faults > 4 * pages and not released
