"""Per-layer latency tables: each weighted layer timed alone, as a one-node model at the widths
a search can give it, on the device that will run the model; cached per device fingerprint in
the user's cache folder (``platformdirs``; ``ONNXPRUNE_CACHE_DIR`` overrides it), so a later
run of the same layers on the same device measures nothing."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..progress import task
from .device import key
from .timer import LocalTimer

CONV_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "auto_pad", "output_padding")


@dataclass(frozen=True)
class Probe:
    """One layer at one width, standalone: ``x`` the input's shape, ``w`` the weight's."""

    op: str  # Conv, ConvTranspose or MatMul
    x: tuple[int, ...]
    w: tuple[int, ...]
    attrs: tuple = ()  # (name, value) pairs (Conv)

    @property
    def key(self) -> str:
        return json.dumps([self.op, self.x, self.w, self.attrs])

    def model(self) -> onnx.ModelProto:
        rng = np.random.default_rng(0)
        weight = numpy_helper.from_array(rng.standard_normal(self.w).astype(np.float32), "w")
        node = helper.make_node(self.op, ["x", "w"], ["y"], **dict(self.attrs))
        graph = helper.make_graph(
            [node], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.x)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model


def cache_folder() -> Path:
    override = os.environ.get("ONNXPRUNE_CACHE_DIR")
    if override:
        return Path(override) / "latency"
    import platformdirs

    return Path(platformdirs.user_cache_dir("onnxprune")) / "latency"


class LatencyTable:
    """Milliseconds of probes on ``provider``; measured once per device (``cache``)."""

    def __init__(self, provider: str = "CPUExecutionProvider", threads: int | None = None,
                 cache: bool = True, seconds: float = 0.04, timer=None):
        """``timer``: where the probes are timed (``latency.timer``; default: here)."""
        self.provider, self.threads, self.cache, self.seconds = provider, threads, cache, seconds
        self.timer = timer or LocalTimer(provider, threads)
        self.device = self.timer.device
        self.path = cache_folder() / f"{key(self.device)}.json"
        self.entries: dict[str, float] = {}
        self.measured = self.reused = 0
        if cache and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if data.get("device") == self.device:
                    self.entries = {k: float(v) for k, v in data["ms"].items()}
            except (OSError, ValueError, KeyError, TypeError):
                self.entries = {}  # an unreadable cache is measured again

    def ms(self, probes: list[Probe]) -> list[float]:
        todo = list(dict.fromkeys(p for p in probes if p.key not in self.entries))
        self.reused += len({p.key for p in probes}) - len(todo)
        if todo:
            with task("latency table", len(todo)) as advance:
                # a few at a time, timed alternately; a remote device takes all at once
                step = 8 if isinstance(self.timer, LocalTimer) else len(todo)
                for lo in range(0, len(todo), step):
                    part = todo[lo:lo + step]
                    feeds = [{"x": np.random.default_rng(1).standard_normal(p.x).astype(
                        np.float32)} for p in part]
                    groups = [range(i, min(i + 8, len(part))) for i in range(0, len(part), 8)]
                    ms = self.timer.time([p.model() for p in part], feeds, self.seconds, 50,
                                         groups)
                    for p, t in zip(part, ms, strict=True):
                        self.entries[p.key] = t["ms"]
                    advance(len(part))
            self.measured += len(todo)
            if self.cache:
                self._save()
        return [self.entries[p.key] for p in probes]

    def _save(self) -> None:
        """Written beside and renamed into place (two runs at once each leave a whole file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".latency-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"device": self.device, "ms": self.entries}, f)
        os.replace(tmp, self.path)
