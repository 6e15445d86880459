"""Execution providers to benchmark on, and one ready-to-run session per model.

CPU sessions are run with numpy inputs. CUDA and TensorRT sessions use I/O binding: the
inputs are copied to the device once and outputs stay there, so a timed run is the inference
alone, not host-device copies (which would swamp small models).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from ..errors import UnsupportedModelError, UsageError
from ..ir.runtime import PROVIDER_HINTS
from . import on_device
from .memory import DevicePeak, HostPeak
from .workload import BenchModel

DEVICE_ID = 0


@dataclass(frozen=True)
class Provider:
    name: str  # as given on the command line
    ort_providers: tuple[str, ...]  # for InferenceSession, preferred first
    device: str | None  # where inputs and outputs are bound; None: host numpy arrays

    def memory_probe(self) -> HostPeak | DevicePeak:
        """A context manager measuring the memory this provider allocates (bytes in ``.delta``)."""
        return DevicePeak(DEVICE_ID) if self.device else HostPeak()

    def prime(self, threads: int | None = None) -> None:
        """Run a one-node model first, so the first model measured is not charged for
        onnxruntime's one-time setup (environment, libraries, device context)."""
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "prime", [x], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 7
        session = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                       providers=list(self.ort_providers))
        session.run(None, {"x": np.zeros(1, np.float32)})
        if self.device:
            ort.OrtValue.ortvalue_from_numpy(np.zeros(1, np.float32), self.device, DEVICE_ID)


PROVIDERS = {
    "cpu": Provider("cpu", ("CPUExecutionProvider",), None),
    "cuda": Provider("cuda", ("CUDAExecutionProvider", "CPUExecutionProvider"), "cuda"),
    "tensorrt": Provider("tensorrt", ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                      "CPUExecutionProvider"), "cuda"),
}


def resolve_providers(names: Sequence[str], notice: Callable[[str], None]) -> list[Provider]:
    """The requested providers this onnxruntime offers.

    A missing provider is an error when it is the only one requested; among several it is
    skipped with a one-line notice (an error again if none is left).
    """
    wanted = list(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    if not wanted:
        raise UsageError("no execution provider given; choose from " + ", ".join(PROVIDERS))
    unknown = [n for n in wanted if n not in PROVIDERS]
    if unknown:
        raise UsageError(f"unknown provider {unknown[0]!r}; choose from {', '.join(PROVIDERS)}")
    have = ort.get_available_providers()
    usable = [PROVIDERS[n] for n in wanted if PROVIDERS[n].ort_providers[0] in have]
    offers = f"onnxruntime {ort.__version__} offers {', '.join(have)}"
    for name in wanted:
        if PROVIDERS[name] not in usable and len(wanted) > 1:
            notice(f"skipping provider {name}: not available here ({offers})")
    if not usable:
        what = f"execution provider {wanted[0]} is not" if len(wanted) == 1 else (
            f"none of the execution providers {', '.join(wanted)} is")
        hints = "; ".join(f"for {n}: {PROVIDER_HINTS[n]}" for n in wanted if n in PROVIDER_HINTS)
        raise UnsupportedModelError(f"{what} available here ({offers}); {hints}")
    return usable


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Deployment settings: all graph optimizations (ORT_ENABLE_ALL), ``intra_op_num_threads``
    when ``threads`` is given, else onnxruntime's default; intra-op threads that sleep between
    runs (models run alternately: a spinning session's threads took the cores from the next
    one, ResNet-50 measured 48 ms beside its cut and 25 ms alone). The device script's
    (``on_device``), so a bench here and one on a device over SSH measure alike."""
    return on_device.session_options(threads)


def open_session(model: BenchModel, provider: Provider, feeds: Mapping[str, np.ndarray],
                 threads: int | None = None) -> Session:
    """A session of ``model`` on ``provider`` with ``feeds`` in place."""
    cls = DeviceSession if provider.device else HostSession
    return cls(model, provider, feeds, threads)


class Session:
    """An onnxruntime session with its inputs in place: ``run()`` is one timed inference."""

    def __init__(self, model: BenchModel, provider: Provider, feeds: Mapping[str, np.ndarray],
                 threads: int | None = None):
        self.session = ort.InferenceSession(model.source, session_options(threads),
                                            providers=list(provider.ort_providers))
        active = self.session.get_providers()[0]
        if active != provider.ort_providers[0]:
            raise UnsupportedModelError(
                f"{provider.ort_providers[0]} could not be initialized for {model.name} "
                f"(onnxruntime fell back to {active}); check the CUDA/TensorRT libraries"
            )
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self) -> None:
        raise NotImplementedError


class HostSession(Session):
    """Inputs are numpy arrays; outputs come back as numpy arrays."""

    def __init__(self, model, provider, feeds, threads=None):
        super().__init__(model, provider, feeds, threads)
        self.feeds = dict(feeds)

    def run(self) -> None:
        self.session.run(self.outputs, self.feeds)


class DeviceSession(Session):
    """I/O binding: inputs copied to the device once, outputs allocated there on every run."""

    def __init__(self, model, provider, feeds, threads=None):
        super().__init__(model, provider, feeds, threads)
        self.binding = self.session.io_binding()
        self._device_inputs = []  # the bound OrtValues must outlive the binding
        for name, array in feeds.items():
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array),
                                                     provider.device, DEVICE_ID)
            self.binding.bind_ortvalue_input(name, value)
            self._device_inputs.append(value)
        for name in self.outputs:
            self.binding.bind_output(name, provider.device, DEVICE_ID)
        self.binding.synchronize_inputs()

    def run(self) -> None:
        self.session.run_with_iobinding(self.binding)
        self.binding.synchronize_outputs()
