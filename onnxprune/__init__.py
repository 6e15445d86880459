"""onnxprune: structured pruning of ONNX models, verified against a mask oracle."""

from __future__ import annotations

__version__ = "0.1.0"

from .api import Analysis, PruneResult, analyze, prune  # noqa: E402
from .pipeline import Context, Fixpoint, Pass, PassResult, Pipeline  # noqa: E402

__all__ = [
    "Analysis", "Context", "Fixpoint", "Pass", "PassResult", "Pipeline", "PruneResult",
    "analyze", "prune", "__version__",
]
