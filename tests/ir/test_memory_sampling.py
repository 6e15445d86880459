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
