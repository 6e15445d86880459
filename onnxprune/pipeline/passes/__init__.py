"""The passes of the pruning pipeline, one module per stage: load (``..entry``) -> normalize
(``frontend``, ``branches``) -> classes/tokens/factors -> components and analysis
(``structure``) -> calibrate/metric (``data``) -> score/select (``pruning``) -> remove
(``removal``) -> blocks (``depth``) -> verify/write/report (``output``) -> recover
(``recovery``) -> quantize (``quantization``); and ``CATALOGUE``, every pass a recipe may
name."""

from ..base import PROVIDED_BY, Pass
from ..entry import LoadModel, UseModel
from .branches import CloseBranches, OpenBranches
from .classes import KeepClasses
from .data import Calibrate, MeasureQuality, UseMetric
from .factors import Factorize, Unfactorize
from .frontend import (
    Cleanup,
    ConstantReshapeTargets,
    DropIdentity,
    FoldBatchNorm,
    FoldConstants,
    InferShapes,
    NameNodes,
    Normalize,
)
from .output import Report, Verify, WriteModel
from .pruning import STRATEGIES, ScoreChannels, SelectChannels
from .quantization import Quantize
from .recovery import Compensate, Distill, VerifyRecovered
from .removal import RemoveChannels
from .structure import AnalyzeChannels, DropAdapters, FindComponents, InsertFlowAdapters
from .tokens import KeepTokens

# Every pass a recipe may name, by name.
CATALOGUE: dict[str, type[Pass]] = {
    cls.name: cls for cls in (
        Normalize, NameNodes, InferShapes, FoldConstants, ConstantReshapeTargets,
        FoldBatchNorm, DropIdentity, Cleanup, OpenBranches, KeepClasses, KeepTokens, Factorize,
        FindComponents, InsertFlowAdapters,
        AnalyzeChannels, Calibrate, UseMetric, ScoreChannels, SelectChannels, MeasureQuality,
        RemoveChannels, DropAdapters, Unfactorize, Verify, Compensate, Distill, VerifyRecovered, CloseBranches,
        Quantize,
        WriteModel, Report,
    )
}
for _cls in (LoadModel, UseModel, *CATALOGUE.values()):
    for _artifact in _cls.provides:
        PROVIDED_BY.setdefault(_artifact, _cls.name)

__all__ = [
    "CATALOGUE", "STRATEGIES", "AnalyzeChannels", "Calibrate", "Cleanup", "CloseBranches", "ConstantReshapeTargets",
    "DropAdapters", "DropIdentity", "Factorize", "FindComponents", "FoldBatchNorm", "FoldConstants",
    "InferShapes", "InsertFlowAdapters", "KeepClasses", "KeepTokens", "LoadModel", "MeasureQuality", "NameNodes", "Normalize",
    "OpenBranches",
    "Quantize", "RemoveChannels", "Report", "ScoreChannels", "Compensate", "Distill",
    "VerifyRecovered", "SelectChannels", "Unfactorize", "UseMetric", "UseModel", "Verify",
    "WriteModel",
]
