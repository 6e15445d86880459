"""Shared pieces of the random graph generator: size limits, op lists and ``Live`` (a tensor
in the pool with its tracked shape)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_C = 16  # channels a layer creates
MIN_HW, MAX_HW = 4, 8  # spatial size of graph inputs
MAX_SPATIAL = 16  # no op grows H or W beyond this
MAX_FEATURES = 1024  # flatten only up to this many features
INT64_MAX = np.iinfo(np.int64).max

Dim = int | str


@dataclass
class Live:
    """A tensor in the pool: its name, tracked shape and whether it is a graph input."""

    name: str
    shape: tuple[Dim, ...]
    graph_input: bool = False

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def feat_axis(self) -> int:
        """The axis onnxprune tracks channels on: 1 for NCHW and (N, F), last for (N, T, F)."""
        return 2 if self.rank == 3 else 1

    @property
    def c(self) -> int:
        return int(self.shape[self.feat_axis])


UNARY = [
    ("Relu", {}, 1), ("LeakyRelu", {"alpha": 0.1}, 1), ("Sigmoid", {}, 1), ("Tanh", {}, 1),
    ("Elu", {}, 1), ("Softplus", {}, 1), ("Abs", {}, 1), ("Neg", {}, 1), ("Erf", {}, 1),
    ("HardSigmoid", {}, 1), ("Softsign", {}, 1), ("Selu", {}, 1), ("Identity", {}, 1),
    ("Dropout", {}, 1), ("Clip", {}, 1), ("ThresholdedRelu", {"alpha": 0.2}, 1),
    ("Celu", {}, 12), ("HardSwish", {}, 14), ("Mish", {}, 18),
]
BINARY = ["Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"]
