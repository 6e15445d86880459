"""Whether the torch interpreter keeps every tensor on its inputs' device, checked on the CPU.

A tensor an op makes without naming a device lands on the CPU: on a GPU run the next op that
mixes it with the GPU's tensors fails. ``on_inputs_device()`` records, while a graph runs, every
factory call (``torch.tensor``, ``arange``, ``zeros`` ...) that names no device and every copy
to numpy (``Tensor.numpy``, ``__array__``: a GPU tensor has none); ``cuda`` is the GPU to check
on for real where torch sees one (None here).
"""

from __future__ import annotations

import contextlib
import traceback

import torch
from torch.overrides import TorchFunctionMode

FACTORIES = {torch.tensor, torch.as_tensor, torch.arange, torch.zeros, torch.ones, torch.full,
             torch.empty, torch.eye, torch.linspace, torch.scalar_tensor, torch.randn,
             torch.rand, torch.randint}
TO_NUMPY = {"numpy", "__array__"}

cuda = torch.device("cuda") if torch.cuda.is_available() else None


def _site() -> str:
    """The innermost line on the stack that is neither torch's nor this module's."""
    f = [f for f in traceback.extract_stack()
         if "/torch/" not in f.filename and not f.filename.endswith("device_check.py")][-1]
    return f"{'/'.join(f.filename.rsplit('/', 2)[-2:])}:{f.lineno} {f.line}"


class _Recorder(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        of_a_tensor = func is torch.as_tensor and args and isinstance(args[0], torch.Tensor)
        if func in FACTORIES and "device" not in kwargs and not of_a_tensor:
            self.found.append(f"{func.__name__} without a device at {_site()}")
        elif getattr(func, "__name__", "") in TO_NUMPY:
            self.found.append(f"{func.__name__} at {_site()}")
        return func(*args, **kwargs)


@contextlib.contextmanager
def on_inputs_device():
    """``with on_inputs_device(): graph.run(...)`` fails with the sites that would put a
    tensor on the CPU (or read one into numpy) on a GPU run."""
    recorder = _Recorder()
    with recorder:
        yield
    assert not recorder.found, sorted(set(recorder.found))


@contextlib.contextmanager
def exact_cuda():
    """CUDA's float32 products and convolutions in full precision (no TF32) for comparisons."""
    matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, conv
