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
from .depth import RemoveBlocks
from .factors import Factorize, Unfactorize
from .frontend import (
    CheckNormalization,
    Cleanup,
    ConstantReshapeTargets,
    DropIdentity,
    DropZeroStates,
    ExplicitSqueezeAxes,
    FoldBatchNorm,
    FoldConstants,
    InferShapes,
    InlineConstantIfs,
    NameNodes,
    Normalize,
    PinInputs,
    ShapeRanges,
    ShuffleToGather,
    UnshareFilledVectors,
)
from .output import Report, Verify, WriteModel
from .pruning import STRATEGIES, ScoreChannels, SelectChannels
from .quantization import Quantize
from .recovery import Compensate, Distill, VerifyRecovered
from .removal import RemoveChannels
from .rotation import Rotate
from .structure import AnalyzeChannels, DropAdapters, FindComponents, InsertFlowAdapters
from .tokens import KeepTokens

# Every pass a recipe may name, by name, in pipeline order (a test checks that every pass of
# this package is here).
CATALOGUE: dict[str, type[Pass]] = {
    cls.name: cls for cls in (
        Normalize, NameNodes, PinInputs, ShapeRanges, InferShapes, DropIdentity, FoldConstants,
        InlineConstantIfs, ConstantReshapeTargets, FoldBatchNorm, DropZeroStates,
        ShuffleToGather, Cleanup, OpenBranches, UnshareFilledVectors, ExplicitSqueezeAxes,
        CheckNormalization, KeepClasses, KeepTokens, Factorize, Rotate, FindComponents,
        InsertFlowAdapters, AnalyzeChannels, Calibrate, UseMetric, ScoreChannels,
        SelectChannels, MeasureQuality, RemoveChannels, RemoveBlocks, DropAdapters, Unfactorize,
        Verify, Compensate, Distill, VerifyRecovered, CloseBranches, Quantize, WriteModel,
        Report,
    )
}
for _cls in (LoadModel, UseModel, *CATALOGUE.values()):
    for _artifact in _cls.provides:
        PROVIDED_BY.setdefault(_artifact, _cls.name)

__all__ = [
    "AnalyzeChannels", "CATALOGUE", "Calibrate", "CheckNormalization", "Cleanup", "CloseBranches",
    "Compensate", "ConstantReshapeTargets", "Distill", "DropAdapters", "DropIdentity",
    "DropZeroStates", "ExplicitSqueezeAxes", "Factorize", "FindComponents", "FoldBatchNorm",
    "FoldConstants", "InferShapes", "InlineConstantIfs", "InsertFlowAdapters", "KeepClasses",
    "KeepTokens", "LoadModel", "MeasureQuality", "NameNodes", "Normalize", "OpenBranches",
    "PinInputs", "Quantize", "RemoveBlocks", "RemoveChannels", "Report", "Rotate", "STRATEGIES",
    "ScoreChannels", "SelectChannels", "ShapeRanges", "ShuffleToGather", "Unfactorize",
    "UnshareFilledVectors", "UseMetric", "UseModel", "Verify", "VerifyRecovered", "WriteModel",
]
