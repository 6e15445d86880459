"""The memory budget of candidate evaluation: how many samples one onnxruntime call of the
gated model may take so that its activations fit.

A search scores K candidate masks as one run of K x N samples; the activations of such a run
grow with the rows, so a detector at 128x768 with 40 samples used to reach 13 GB. The rows per
call are bounded by ``budget / (RUNTIME_FACTOR x bytes per sample)``, where the bytes per
sample are the most bytes of computed tensors alive at once for one sample (shape inference
at the data's shapes, each tensor freed after its last reader, as onnxruntime's planner
reuses buffers). The budget is, by default, a quarter of the memory available, at most
``DEFAULT_CAP``.

``--memory`` caps the whole run: the process's resident memory, measured from outside. A run
sets the cap (``capped``) and every working set (candidate runs, fetched activations, patch
matrices, training batches) takes a share of what the cap leaves above what the process holds
when the set is sized (``room``), so that the model, the data and the libraries count too.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar

import numpy as np
import onnx

from ..errors import UsageError
from ..ir.memory import current_rss, release
from ..ir.runtime import weightless
from ..ir.weights import proto

DEFAULT_SHARE = 0.25  # of the available memory
DEFAULT_CAP = 8 << 30
FALLBACK = 2 << 30  # when the available memory cannot be read
# onnxruntime's arena and kernel workspaces over the live tensors (measured 1.1-1.7x on an
# autoencoder, 1.9x on a text detector without an arena)
RUNTIME_FACTOR = 2.5
FLOOR = 16 << 20  # the least a working set is given under a cap it cannot otherwise meet
MAX_CELLS = 30_000_000  # rows x columns of a refit's patch matrix
CELL_BYTES = 24  # bytes a patch-matrix cell costs while solved (float32 + float64 copies)
_CAP: ContextVar[int | None] = ContextVar("onnxprune_memory_cap", default=None)
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


@contextlib.contextmanager
def capped(memory: int | None) -> Iterator[None]:
    """Work inside holds the process's resident memory under ``memory`` bytes (None: no cap)."""
    token = _CAP.set(memory)
    try:
        yield
    finally:
        _CAP.reset(token)


def cap() -> int | None:
    """The run's memory cap in bytes (``--memory``), None when none was given."""
    return _CAP.get()


def room(default: int, share: float) -> int:
    """Bytes one working set may take: ``default`` without a cap; under one, at most ``share``
    of what the cap leaves above the process's resident memory now (at least ``FLOOR``, or
    ``default`` when smaller)."""
    limit = _CAP.get()
    if limit is None:
        return int(default)
    release()  # what the heap holds freed is not held
    left = limit - (current_rss() or 0)
    return int(max(min(FLOOR, default), min(default, share * left)))


def cells(default: int = MAX_CELLS) -> int:
    """Patch-matrix cells one solve may take: ``default``, or fewer under a memory cap."""
    return max(1, room(default * CELL_BYTES, 0.25) // CELL_BYTES)


def search_budget(share: float = 0.5) -> int:
    """The activation budget of candidate evaluation: the default budget, or under a cap its
    ``share`` of the room left."""
    return room(default_budget(), share)


def activation_bytes(model: onnx.ModelProto, sample: dict[str, np.ndarray]) -> int | None:
    """Peak bytes of computed tensors alive at once for ``sample`` (one sample per input, at
    its shape; other inputs' symbolic dimensions at 1), by shape inference; None when no
    tensor's size can be inferred."""
    sizes = tensor_bytes(model, sample)
    return None if not sizes else _peak_live(proto(model).graph, sizes)


def tensor_bytes(model: onnx.ModelProto, sample: dict[str, np.ndarray]) -> dict[str, int]:
    """The bytes of each computed tensor whose shape inference finds for ``sample`` (as
    ``activation_bytes`` takes it); empty when inference fails."""
    bare = weightless(model)
    for vi in bare.graph.input:
        shape = vi.type.tensor_type.shape
        if vi.name in sample:
            shape.ClearField("dim")
            for d in np.shape(sample[vi.name]):
                shape.dim.add().dim_value = int(d)
        else:  # other inputs (the oracle's gates: a row per sample) at 1 where symbolic
            for d in shape.dim:
                if not d.HasField("dim_value"):
                    d.dim_value = 1
    del bare.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(bare, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort
        return {}
    sizes: dict[str, int] = {}
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
        sizes[vi.name] = int(np.prod(dims, dtype=np.int64)) * size
    return sizes


def _peak_live(graph: onnx.GraphProto, sizes: dict[str, int]) -> int:
    """The most bytes of computed tensors alive at once, nodes run in graph order: a tensor
    lives from the node that makes it to its last reader (graph outputs to the end)."""
    last: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            last[name] = i
    end = len(graph.node)
    for out in graph.output:
        last[out.name] = end
    live = peak = 0
    dying: dict[int, int] = {}
    for i, node in enumerate(graph.node):
        made = sum(sizes.get(o, 0) for o in node.output if o)
        live += made
        peak = max(peak, live)
        for o in node.output:
            if o:
                dying[last.get(o, i)] = dying.get(last.get(o, i), 0) + sizes.get(o, 0)
        live -= dying.pop(i, 0)
    return peak


def rows_per_call(budget: int, per_sample: int | None, needed: int, what: str) -> int | None:
    """Samples one call may take (None: no bound known). ``needed``: the fewest samples one
    call must take (a fixed batch); a budget that cannot hold them is a usage error."""
    if per_sample is None or per_sample <= 0:
        return None
    per_sample = int(per_sample * RUNTIME_FACTOR)
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


def rows_for(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
             axes: dict[str, int | None] | None = None, budget: int | None = None) -> int | None:
    """Samples per run of ``model`` on ``feeds`` whose activations fit ``budget`` (default:
    the default budget); None when the model's tensor sizes cannot be inferred. At least 1."""
    axes = axes or {}
    names = {i.name for i in proto(model).graph.input}
    one = {k: v if axes.get(k, 0 if np.ndim(v) else None) is None
           else np.take(v, [0], axis=axes.get(k, 0))
           for k, v in feeds.items() if k in names}
    per = activation_bytes(model, one)
    if not per:
        return None
    budget = budget if budget is not None else default_budget()
    return max(1, int(budget // (per * RUNTIME_FACTOR)))
