"""The device a latency is measured on, as a fingerprint: tables measured on one device are
reused only on the same one."""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache

import onnxruntime as ort

from ..bench import on_device


@cache
def processor() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform says."""
    return on_device.processor()


def fingerprint(provider: str, threads: int | None) -> dict:
    return {"provider": provider, "processor": processor(), "cpus": os.cpu_count(),
            "threads": threads or 0, "onnxruntime": ort.__version__}


def key(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
