"""One onnxruntime CPU arena that a search's sessions share, given back when the search ends.

A search runs a hundred candidates and more through a few sessions (the gated model, its
suffixes from kept points). Without an arena every run allocates its tensors afresh and the
system faults their pages in again (PP-OCR rec's neck and head: 0.21 s a run, 0.08 s from an
arena); a session's own arena would keep its largest run's memory per session, and sessions
of the same search would add those up. The shared arena holds what the largest run of any
of them needs, once, and ``shrink`` hands it back to the system (onnxruntime's arena
shrinkage at the end of a run: every region that is wholly free, all but the first, which a
tiny run makes right after registration, so it stays 1 MB).

onnxruntime allows one such allocator per process (``create_and_register_allocator``); where
it cannot be registered the sessions run without an arena, as before."""

from __future__ import annotations

import threading

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

INITIAL = 1 << 20  # bytes of the first region, the one shrinkage keeps
_LOCK = threading.Lock()
_STATE: dict = {}  # "tiny": the session whose runs make the first region and shrink; "failed"


def _options() -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.enable_mem_pattern = False  # candidates run at many sizes
    opts.add_session_config_entry("session.use_env_allocators", "1")
    opts.log_severity_level = 3
    return opts


def _tiny() -> ort.InferenceSession:
    node = helper.make_node("Neg", ["x"], ["y"])
    graph = helper.make_graph([node], "arena", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    return ort.InferenceSession(model.SerializeToString(), _options(),
                                providers=["CPUExecutionProvider"])


def available() -> bool:
    """Whether the shared arena is registered (registering it on first use)."""
    with _LOCK:
        if "tiny" in _STATE:
            return True
        if _STATE.get("failed"):
            return False
        try:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                     ort.OrtMemType.DEFAULT)
            # regions as large as asked (not the next power of two): what a run needs
            cfg = ort.OrtArenaCfg({"arena_extend_strategy": 1,
                                   "initial_chunk_size_bytes": INITIAL})
            ort.create_and_register_allocator(info, cfg)
            tiny = _tiny()
            tiny.run(None, {"x": np.zeros(1, np.float32)})  # the first region: INITIAL bytes
        except Exception:  # noqa: BLE001 - registered elsewhere already, or unsupported
            _STATE["failed"] = True
            return False
        _STATE["tiny"] = tiny
        return True


def use(opts: ort.SessionOptions) -> bool:
    """Make a session with ``opts`` allocate from the shared arena (False: it cannot; the
    options are left as they were)."""
    if not available():
        return False
    opts.enable_cpu_mem_arena = True
    opts.enable_mem_pattern = False
    opts.add_session_config_entry("session.use_env_allocators", "1")
    return True


def shrink() -> None:
    """Give the shared arena's free regions back to the system (a no-op if it was never
    registered)."""
    tiny = _STATE.get("tiny")
    if tiny is None:
        return
    ro = ort.RunOptions()
    ro.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    with _LOCK:
        tiny.run(None, {"x": np.zeros(1, np.float32)}, ro)
