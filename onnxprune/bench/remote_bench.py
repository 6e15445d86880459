"""``bench --host``: a measurement group (models x one provider x one batch) timed on a device
over SSH (``bench.remote``) by the device script, alternately as here. What differs from a
local group: host memory is not measured there, and inputs are fed as host arrays on every
provider (a GPU's timings include the copies)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import onnx

from ..errors import UnsupportedModelError, UsageError
from .providers import PROVIDERS, Provider
from .remote import Host
from .report import BenchRow
from .stats import summarize
from .workload import BenchModel, at_batch


def device_providers(host: Host, names: Sequence[str], note: Callable[[str], None]
                     ) -> list[Provider]:
    """The requested providers the device's onnxruntime offers (as ``resolve_providers``)."""
    wanted = list(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    have = host.info()["providers"]
    usable = [PROVIDERS[n] for n in wanted if n in PROVIDERS and
              PROVIDERS[n].ort_providers[0] in have]
    for name in wanted:
        if name in PROVIDERS and PROVIDERS[name] not in usable and len(wanted) > 1:
            note(f"skipping provider {name}: not available on {host.spec}")
    if not usable:
        raise UnsupportedModelError(f"{host.spec}: none of the execution providers "
                                    f"{', '.join(wanted)} is available there (onnxruntime "
                                    f"{host.info()['onnxruntime']} offers {', '.join(have)})")
    return usable


def _bytes(model: BenchModel) -> bytes:
    if isinstance(model.source, bytes):
        return model.source
    if any(t.data_location == onnx.TensorProto.EXTERNAL
           for t in model.proto.graph.initializer):
        raise UsageError(f"{model.name}: its weights are in external data files; save it with "
                         "the weights inside to measure it on a device")
    return Path(model.source).read_bytes()


def measure_remote(host: Host, models: list[BenchModel], provider: Provider, batch: int,
                   threads: int | None, warmup: int, repeat: int | None,
                   seconds: float | None, input_shapes, pinned,
                   note: Callable[[str], None], min_rounds: int) -> list[BenchRow]:
    """The rows of one group, timed on ``host``."""
    taken = at_batch(models, batch, input_shapes, pinned, note)
    if not taken:
        return []
    chosen = [m for m, _, _ in taken]
    feeds = [f for _, _, f in taken]
    macs = [m.macs(shapes) for m, shapes, _ in taken]
    times = host.time([_bytes(m) for m in chosen], feeds,
                      providers=list(provider.ort_providers), threads=threads, warmup=warmup,
                      repeat=repeat, seconds=seconds or 0.0, min_rounds=min_rounds)
    rows = []
    for model, ts, m in zip(chosen, times, macs, strict=True):
        lat = summarize(ts, batch)
        rows.append(BenchRow(model.name, provider.name, batch, lat.runs, lat.p50, lat.p90,
                             lat.p99, lat.mean, lat.throughput, m, model.params, None,
                             params_by_type=model.params_by_type,
                             weight_bytes=model.weight_bytes))
    return rows
