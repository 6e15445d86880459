"""Where a distilled student trains, and what a training step may take there.

``resolve("auto")`` is a CUDA GPU when torch sees one, else the CPU. On the CPU a step runs on
one thread or on every core (``threads``: by the step's arithmetic), with denormal floats
flushed, and takes as many samples as its share of the resident memory holds (``fitting``:
measured, under ``--memory`` when given). On a GPU the step's samples are sized by the GPU's
own memory instead: half of what is free, measured by torch's allocator.

``precision``: a step's arithmetic in float32 (the default) or with its products in bfloat16
(``autocast``: torch's mixed precision; the weights, their gradients and Adam stay float32),
where the device computes bfloat16 natively.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

import numpy as np
import onnx
import torch

from ..errors import UsageError, warn
from ..search.memory import cap

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
OutOfMemory = torch.cuda.OutOfMemoryError  # what a GPU too small for a step raises
# torch intra-op threads while training on the CPU: one for small steps (fastest there), every
# core the process may use once a step's forward pass is this many MACs (MiniLM at 32
# sentences of 32 tokens, ~4e9: 1.6x faster on 2 cores)
PARALLEL_MACS = 1e9
# what a training step may add to the resident memory without --memory (PP-OCR rec's steps
# of 32 crops took it from 1.7 to 4.8 GB)
STEP_BYTES = 512 << 20
PROBE_SAMPLES = 8  # the step that measures a sample's memory
AUTO: str | None = None  # what auto means (the test suite's CPU runs); None: by what torch sees
GPU_SHARE = 0.5  # of the GPU memory torch may still take before training, what training may


def resolve(device: str | torch.device | None) -> torch.device:
    """``auto`` (or None): ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` (or
    ``cuda:N``) without one is a usage error."""
    name = "auto" if device is None else str(device)
    if name == "auto":
        return torch.device(AUTO or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        chosen = torch.device(name)
    except RuntimeError:
        raise UsageError(f"distill: device must be one of {', '.join(DEVICES)}, not {name!r}"
                         ) from None
    if chosen.type not in ("cpu", "cuda"):
        raise UsageError(f"distill: device must be one of {', '.join(DEVICES)}, not {name!r}")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        build = torch.__version__
        raise UsageError(f"distill: device {name} asked for, but torch {build} sees no CUDA GPU "
                         "(a CPU-only build, or no driver); use device cpu or auto")
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"distill: device {name} asked for, but torch sees "
                         f"{torch.cuda.device_count()} CUDA GPU(s) (cuda:0 is the first)")
    return chosen


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 products natively: a CUDA GPU that supports them
    (compute capability 8 and later), a CPU with AVX512-BF16 or AMX instructions (elsewhere
    torch emulates them, slower than float32)."""
    if device.type == "cuda":  # (by default torch also counts a GPU that emulates them)
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported",
                                                          "_is_amx_tile_supported"))
    return any(check() for check in checks if check is not None)


def resolve_precision(name: str, device: torch.device) -> str:
    """The step's precision: ``name``, or fp32 (said once) where ``device`` would emulate
    bfloat16."""
    if name not in PRECISIONS:
        raise UsageError(f"distill: precision must be one of {', '.join(PRECISIONS)}, "
                         f"not {name!r}")
    if name == "bf16" and not native_bf16(device):
        where = "this CPU has no AVX512-BF16 or AMX" if device.type == "cpu" else \
            f"{device} has no bfloat16 arithmetic"
        warn(f"distill: precision bf16 asked for, but {where}: training in fp32")
        return "fp32"
    return name


def autocast(name: str, device: torch.device):
    """The context a training step's forward pass runs in: torch's autocast to bfloat16 for
    ``bf16`` (products in bfloat16, reductions and losses in float32), nothing for fp32."""
    if name != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def adam(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam over ``params``, its update one fused kernel for all of them where torch has one
    for their device (the CPU's and CUDA's: MiniLM's per-tensor update took 15 ms of a
    210 ms step, fused 6; the same update to float rounding)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:  # no fused kernel for this device or type
        return torch.optim.Adam(params, lr=lr)


def threads(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], size: int) -> int:
    """Intra-op threads for training on the CPU: see ``PARALLEL_MACS``."""
    from ..analysis.size import macs_at
    from ..ir.graph import import_model, infer_shapes

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if (cores or 1) < 2:
        return 1
    try:
        macs = macs_at(infer_shapes(import_model(model)),
                       {k: list(np.shape(v)) for k, v in feeds.items()})
    except Exception:  # noqa: BLE001 - a model the counter cannot size trains on one thread
        return 1
    return int(cores) if macs * size >= PARALLEL_MACS else 1


@contextlib.contextmanager
def flush_denormals():
    """Denormal floats flushed to zero while training (a dying student's tiny values made
    each CPU step 5x slower), restored after."""
    was = torch.set_flush_denormal(True)  # False where the CPU cannot
    try:
        yield
    finally:
        if was:
            torch.set_flush_denormal(False)


def fitting(loss_of, idx: np.ndarray, params, device: torch.device) -> int | None:
    """Samples per training step, measured (``loss_of(idx)``: the loss of a step on samples
    ``idx``). On the CPU: the resident memory a step adds per sample (a step of
    ``PROBE_SAMPLES`` after a warm-up of one, fewer where the warm-up says they would pass
    ``STEP_BYTES``: one sample alone made a 13-token MiniLM sentence look over 40 MB; under a
    cap, of one sample), against half the room a memory cap (``--memory``) leaves, or
    ``STEP_BYTES`` without one. On a GPU: the bytes a step allocates there per sample against
    ``GPU_SHARE`` of what torch may still take there (``_gpu_fitting``). 0: not even one
    sample fits under the cap (on a GPU: in its memory)."""
    if device.type == "cuda":
        return _gpu_fitting(loss_of, idx, params, device)
    from ..ir.memory import current_rss, peak_window, release
    from ..search.memory import room

    def added(k: int) -> tuple[int, int]:  # (bytes a step of k samples adds, the rss before)
        release()
        before = current_rss() or 0
        with peak_window() as window:
            _step(loss_of, idx[:k], params)
        release()  # (backward freed what the step saved)
        return max((window.peak or before) - before, 0), before

    warm, _ = added(1)
    # within a step's bytes by the warm-up's measure (8 long text lines added 0.7 GB)
    probe = 1 if cap() is not None else max(1, min(len(idx), PROBE_SAMPLES,
                                                   STEP_BYTES // max(warm, 1)))
    grown, before = added(probe)
    per = max(grown // probe, 1 << 20)
    if cap() is None:
        return max(1, int(STEP_BYTES // per))
    if before + per > cap():
        return 0
    return max(1, int(room(1 << 50, 0.5) // per))


def _step(loss_of, idx: np.ndarray, params) -> None:
    """One step's forward and backward on ``idx``, its gradients dropped."""
    loss = loss_of(idx)
    if loss.requires_grad:
        loss.backward()
    for p in params:
        p.grad = None


def _gpu_fitting(loss_of, idx: np.ndarray, params, device: torch.device) -> int:
    """``fitting`` on a GPU: the allocator's peak over a step per sample (one sample's step
    first, which also chooses the kernels; then ``PROBE_SAMPLES``, fewer where one sample's
    says they would not fit, halved while the GPU runs out of memory), against ``GPU_SHARE``
    of what torch may still take there less what training holds beside a step later: Adam's
    two moments of the trained weights and two copies of the best weights."""
    weights = list(params)
    held = sum(p.numel() * p.element_size() * (4 if p.requires_grad else 2) for p in weights)
    free, _ = torch.cuda.mem_get_info(device)
    room = GPU_SHARE * (free + torch.cuda.memory_reserved(device)
                        - torch.cuda.memory_allocated(device)) - held
    one = _gpu_peak(loss_of, idx[:1], weights, device)
    if one is None or room <= 0:
        return 0
    probe = max(1, min(len(idx), PROBE_SAMPLES, int(room // max(one, 1))))
    grown = _gpu_peak(loss_of, idx[:probe], weights, device)
    while grown is None and probe > 1:
        probe //= 2
        grown = _gpu_peak(loss_of, idx[:probe], weights, device)
    if grown is None:
        return 0
    per = max(grown // probe, 1 << 20)
    return int(room // per)


def _gpu_peak(loss_of, idx: np.ndarray, params, device: torch.device) -> int | None:
    """The bytes a step on ``idx`` allocates on the GPU at its peak (torch's own counter, not
    the process's); None: the GPU ran out of memory."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    failed = False
    try:
        _step(loss_of, idx, params)
        torch.cuda.synchronize(device)
    except torch.cuda.OutOfMemoryError:
        failed = True
    for p in params:
        p.grad = None
    if failed:  # (outside the handler: the failed step's tensors are free by now)
        torch.cuda.empty_cache()
        return None
    return max(torch.cuda.max_memory_allocated(device) - before, 0)
