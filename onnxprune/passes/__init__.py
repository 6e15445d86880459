"""The passes of the pruning pipeline: load -> normalize -> components -> analyze ->
calibrate/metric -> score -> select -> remove -> cleanup -> verify -> write."""

from .data import Calibrate, MeasureQuality, UseMetric
from .frontend import (
    Cleanup,
    ConstantReshapeTargets,
    DropIdentity,
    FoldBatchNorm,
    FoldConstants,
    InferShapes,
    LoadModel,
    NameNodes,
    Normalize,
    UseModel,
)
from .output import Verify, WriteModel
from .pruning import STRATEGIES, RemoveChannels, ScoreChannels, SelectChannels
from .recovery import Compensate, Distill, VerifyRecovered
from .structure import AnalyzeChannels, DropAdapters, FindComponents, InsertFlowAdapters

__all__ = [
    "STRATEGIES", "AnalyzeChannels", "Calibrate", "Cleanup", "ConstantReshapeTargets",
    "DropAdapters", "DropIdentity", "FindComponents", "FoldBatchNorm", "FoldConstants",
    "InferShapes", "InsertFlowAdapters", "LoadModel", "MeasureQuality", "NameNodes", "Normalize",
    "RemoveChannels", "ScoreChannels", "Compensate", "Distill", "VerifyRecovered", "SelectChannels", "UseMetric", "UseModel", "Verify",
    "WriteModel",
]
