"""Static int8 quantization with onnxruntime's quantizer (``quantize_static``).

The QDQ format: QuantizeLinear/DequantizeLinear pairs around weights and activations, which
onnxruntime fuses into integer kernels when it optimizes the session. Weights are quantized
per output channel (symmetric int8), activations per tensor with ranges calibrated on the
calibration arrays (asymmetric uint8 by default, what onnxruntime recommends for x86 CPUs).
Nothing here quantizes by hand: the arrays are handed to onnxruntime's calibrator in batches.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..errors import UsageError
from ..ir.arrays import Calibration
from ..ir.io import weight_bytes
from ..ir.runtime import default_opset
from ..ir.shapes import input_specs

TYPES = ("int8", "uint8")
METHODS = ("minmax", "entropy", "percentile")
PER_CHANNEL_OPSET = 13  # DequantizeLinear's axis (per-channel scales) came with opset 13
EXTERNAL_DATA_BYTES = 1_500_000_000  # weights above this go through files as external data
# x86 instructions whose int8 dot products do not saturate (without them onnxruntime's u8s8
# kernels add pairs of 8-bit products in 16 bits, and 8-bit weights can overflow them)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.cache
def cpu_lacks_vnni() -> bool:
    """True on an x86 CPU whose flags (Linux's /proc/cpuinfo) show no VNNI: there onnxruntime
    advises 7-bit weights (reduce_range). False elsewhere, or when the flags cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    return lacks_vnni(platform.machine(), text)


def lacks_vnni(machine: str, cpuinfo: str) -> bool:
    """``cpu_lacks_vnni`` for a machine name and the text of its /proc/cpuinfo."""
    if machine.lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                  if line.startswith("flags")), None)
    return flags is not None and not any(f in flags for f in VNNI_FLAGS)


@dataclass(frozen=True)
class QuantSettings:
    """What ``quantize_int8`` asks onnxruntime for."""

    weights: str = "int8"
    activations: str = "uint8"
    per_channel: bool = True
    method: str = "minmax"
    reduce_range: bool = False  # 7-bit weights, for CPUs without VNNI (see cpu_lacks_vnni)
    batch: int = 16  # calibration samples per onnxruntime run

    def __post_init__(self) -> None:
        for what in ("weights", "activations"):
            if getattr(self, what) not in TYPES:
                raise UsageError(f"quantize {what}: one of {', '.join(TYPES)}, got "
                                 f"{getattr(self, what)!r}")
        if self.method not in METHODS:
            raise UsageError(f"quantize method: one of {', '.join(METHODS)}, got {self.method!r}")

    def describe(self) -> str:
        weights = f"{self.weights} weights {'per channel' if self.per_channel else 'per tensor'}"
        return (f"QDQ, {weights}, {self.activations} activations, {self.method} calibration"
                + (", reduced range" if self.reduce_range else ""))


def even_batch(n: int, batch: int) -> int:
    """A batch size that splits ``n`` samples into equal batches, as onnxruntime's histogram
    calibrators (entropy, percentile) need: they stack every batch's outputs into one array.
    As many batches as ``batch`` needs, each as large as they can all be (``n`` // count);
    the samples left over, fewer than the batches, are not fed (none when a divisor fits)."""
    if n <= batch:
        return max(n, 1)
    count = -(-n // batch)
    size = n // count
    return next((k for k in range(batch, size - 1, -1) if n % k == 0), size)


def _batching(model: onnx.ModelProto, calib: Calibration, batch: int, even: bool
              ) -> tuple[list[str], int, int, int | None]:
    """(the model inputs calib holds, the batch size, the samples fed, a batch the model fixes)."""
    specs = {s.name: s for s in input_specs(model)}
    names = [n for n in specs if n in calib]
    fixed = None
    for name in names:
        axis = calib.axes.get(name)
        dims = specs[name].dims
        if axis is not None and axis < len(dims) and isinstance(dims[axis], int):
            fixed = dims[axis]
    n = calib.samples
    step = fixed or (even_batch(n, max(1, batch)) if even and n else max(1, batch))
    fed = n - n % step if fixed is not None or even else n
    return names, step, fed, fixed


def calibrated_samples(model: onnx.ModelProto, calib: Calibration, s: QuantSettings) -> int:
    """How many of the calibration samples ``quantize_int8`` feeds (a fixed or even batch
    leaves the last, shorter one out)."""
    return _batching(model, calib, s.batch, s.method != "minmax")[2]


def calibration_batches(model: onnx.ModelProto, calib: Calibration,
                        batch: int, even: bool = False) -> list[dict[str, np.ndarray]]:
    """The calibration samples as feeds of at most ``batch`` samples (of exactly the model's
    batch when an input fixes it), model inputs only; arrays fed whole go to every batch.
    ``even``: every batch the same size (``even_batch``)."""
    names, step, fed, fixed = _batching(model, calib, batch, even)
    n = calib.samples
    out = []
    for lo in range(0, fed, step):
        idx = np.arange(lo, min(lo + step, n))
        out.append({k: np.ascontiguousarray(calib[k] if calib.axes.get(k) is None
                                            else np.take(calib[k], idx, axis=calib.axes[k]))
                    for k in names})
    if not out:
        raise UsageError(f"quantization needs at least {step} calibration samples (the model's "
                         f"batch), got {n}")
    return out


def _reader(batches: list[dict[str, np.ndarray]]):
    from onnxruntime.quantization import CalibrationDataReader

    class ArrayReader(CalibrationDataReader):
        """The batches in order; ``set_range`` lets the calibrator take them a few at a time."""

        def __init__(self) -> None:
            self.batches, self.start, self.end = batches, 0, len(batches)
            self.at = 0

        def get_next(self):
            if self.start + self.at >= self.end:
                return None
            self.at += 1
            return self.batches[self.start + self.at - 1]

        def __len__(self) -> int:
            return len(self.batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.start, self.end, self.at = start_index, min(end_index, len(self.batches)), 0

        def rewind(self) -> None:
            self.at = 0

    return ArrayReader()


class _QuietQuantizer(logging.Filter):
    """onnxruntime's quantizer logs advice on the root logger (pre-processing, formats) that
    is not for onnxprune's users: dropped while it runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime/quantization/" not in record.pathname.replace("\\", "/")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    root, quiet = logging.getLogger(), _QuietQuantizer()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def with_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """The model at default-domain opset ``opset`` at least (converted when below)."""
    have = default_opset(model)
    if have is None or have >= opset:
        return model
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, opset)
    except Exception as err:  # noqa: BLE001 - the converter's own errors
        raise UsageError(f"per-channel quantization needs opset {opset}; converting the model "
                         f"from opset {have} failed ({str(err).splitlines()[0]}); use per-tensor "
                         "weights") from None


def quantize_int8(model: onnx.ModelProto, calib: Calibration,
                  settings: QuantSettings | None = None,
                  exclude: tuple[str, ...] = ()) -> onnx.ModelProto:
    """``model`` quantized by onnxruntime's ``quantize_static`` (QDQ), calibrated on the
    samples of ``calib`` (only the arrays of model inputs are fed); ``exclude``: node names
    left in float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    s = settings or QuantSettings()
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[s.method]
    if s.per_channel:
        model = with_opset(model, PER_CHANNEL_OPSET)
    batches = calibration_batches(model, calib, s.batch, even=s.method != "minmax")
    big = weight_bytes(model) > EXTERNAL_DATA_BYTES
    extra = {"CalibStridedMinMax": 1} if s.method == "minmax" else {}  # ranges merged per batch
    with tempfile.TemporaryDirectory(prefix="onnxprune-quantize-") as tmp:
        src, out = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src), save_as_external_data=big)
        with _quiet():
            quantize_static(str(src), str(out), _reader(batches), quant_format=QuantFormat.QDQ,
                            per_channel=s.per_channel, reduce_range=s.reduce_range,
                            activation_type=qtype[s.activations], weight_type=qtype[s.weights],
                            nodes_to_exclude=list(exclude) or None,
                            use_external_data_format=big, calibrate_method=method,
                            extra_options=extra)
        return onnx.load(str(out))
