"""onnxprune: structured pruning of ONNX models, verified against a mask oracle.

The names below load on first use, so that ``import onnxprune.<module>`` (the command line's
entry point among them) costs nothing until the API is needed."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Analysis": "api", "PruneResult": "api", "analyze": "api", "prune": "api",
    "Context": "pipeline", "Fixpoint": "pipeline", "Pass": "pipeline",
    "PassResult": "pipeline", "Pipeline": "pipeline",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
