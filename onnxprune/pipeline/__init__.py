"""The pass pipeline: its infrastructure (``core``), every pass grouped by stage (frontend,
structure, data, pruning, recovery, output), the catalogue recipes name passes from, and the
recipe loader."""

from .core import Context, Fixpoint, Pass, PassResult, Pipeline, total_time
from .passes import *  # noqa: F403 - every pass class and the catalogue
from .passes import __all__ as _passes

__all__ = ["Context", "Fixpoint", "Pass", "PassResult", "Pipeline", "total_time", *_passes]
