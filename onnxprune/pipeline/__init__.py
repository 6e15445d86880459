"""The pass pipeline. Infrastructure here: what a pass is and the context passes share
(``base``), the pipeline that runs them (``core``), the passes that load a model (``entry``),
the prune pipeline built from options and a recipe's run (``build``), the recipe loader
(``recipes``) and the result a run returns (``result``). The passes themselves, grouped by
stage, and the catalogue recipes name them from: ``passes/`` (frontend, branches, classes,
tokens, factors, structure, data, pruning, depth, recovery, output, quantization). What passes
share that is not a pass: ``support/`` (inputs, stages, probe, augment, padding, coverage,
soft_criteria)."""

from .base import RUN_OPTIONS, Context, Pass, PassResult, Resources, RunConfig
from .core import Fixpoint, Pipeline, peak_memory, total_time
from .passes import *  # noqa: F403 - every pass class and the catalogue
from .passes import __all__ as _passes

__all__ = ["RUN_OPTIONS", "Context", "Fixpoint", "Pass", "PassResult", "Pipeline", "Resources",
           "RunConfig", "peak_memory", "total_time", *_passes]
