"""The memory budget of candidate evaluation: how many samples one onnxruntime call of the
gated model may take so that its activations fit.

A search scores K candidate masks as one run of K x N samples; the activations of such a run
grow with the rows, so a detector at 128x768 with 40 samples used to reach 13 GB. The rows per
call are bounded by ``budget / activation bytes per sample``, where the bytes per sample are
the sum of every tensor the graph computes for one sample (shape inference at the data's
shapes: an upper bound, onnxruntime reuses buffers). The budget is ``--memory`` or, by
default, a quarter of the memory available, at most ``DEFAULT_CAP``.
"""

from __future__ import annotations

import re

import numpy as np
import onnx

from ..errors import UsageError
from ..ir.runtime import weightless

DEFAULT_SHARE = 0.25  # of the available memory
DEFAULT_CAP = 8 << 30
FALLBACK = 2 << 30  # when the available memory cannot be read
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_memory(value) -> int:
    """Bytes from ``4G``, ``512M``, ``1.5GB``, ``1024`` (bytes)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        n = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)[iI]?[bB]?\s*", str(value))
        if m is None:
            raise ValueError(f"expected a size such as 4G or 512M, got {value!r}")
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if n < 1 << 20:
        raise ValueError(f"a memory budget below 1M is not usable (got {value!r})")
    return int(n)


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), bytes."""
    try:
        with open("/proc/meminfo") as f:
            m = re.search(r"MemAvailable:\s+(\d+) kB", f.read())
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


def default_budget() -> int:
    free = available_memory()
    return FALLBACK if free is None else int(min(DEFAULT_CAP, DEFAULT_SHARE * free))


def activation_bytes(model: onnx.ModelProto, sample: dict[str, np.ndarray]) -> int | None:
    """Bytes of every tensor a node computes for ``sample`` (one sample per input, at its
    shape), by shape inference; None when no tensor's size can be inferred."""
    bare = weightless(model)
    for vi in bare.graph.input:
        if vi.name in sample:
            shape = vi.type.tensor_type.shape
            shape.ClearField("dim")
            for d in np.shape(sample[vi.name]):
                shape.dim.add().dim_value = int(d)
    del bare.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(bare, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort
        return None
    total, known = 0, 0
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape") or not tt.elem_type:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        if any(d < 0 for d in dims):
            continue
        try:
            size = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).itemsize
        except (KeyError, TypeError, ValueError):
            size = 4
        total += int(np.prod(dims, dtype=np.int64)) * size
        known += 1
    return total if known else None


def rows_per_call(budget: int, per_sample: int | None, needed: int, what: str) -> int | None:
    """Samples one call may take (None: no bound known). ``needed``: the fewest samples one
    call must take (a fixed batch); a budget that cannot hold them is a usage error."""
    if per_sample is None or per_sample <= 0:
        return None
    rows = int(budget // per_sample)
    if rows < needed:
        raise UsageError(
            f"{what}: one call of the model needs about {_size(per_sample * needed)} of "
            f"activations, more than the memory budget {_size(budget)} (raise --memory, or "
            "use smaller calibration inputs)")
    return rows


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
