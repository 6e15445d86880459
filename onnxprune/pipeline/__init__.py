"""The pass pipeline: what a pass is and what passes share (``base``), the pipeline that runs
them (``core``), every pass grouped by stage (entry, frontend, structure, data, pruning,
recovery, output), the catalogue recipes name passes from (``passes``), the recipe loader and
the prune pipeline built from options (``build``)."""

from .base import RUN_OPTIONS, Context, Pass, PassResult, Resources, RunConfig
from .core import Fixpoint, Pipeline, peak_memory, total_time
from .passes import *  # noqa: F403 - every pass class and the catalogue
from .passes import __all__ as _passes

__all__ = ["RUN_OPTIONS", "Context", "Fixpoint", "Pass", "PassResult", "Pipeline", "Resources",
           "RunConfig", "peak_memory", "total_time", *_passes]
