"""Comparing outputs: the pruned model against the mask oracle, the normalized graph against
the input model.

Outputs are arrays, or what onnxruntime returns for sequences (lists of arrays, lists of maps
from scikit-learn's ZipMap); both become arrays. The tolerance of each output is
``atol + rtol * |reference|`` elementwise, with ``atol`` the larger of a floor relative to the
output's magnitude and a multiple of the output's own float noise: how much it moves when every
gate of the oracle is perturbed by a few units in the last place (``noise``). Float rounding in
the pruned model (sums over fewer terms, in another order) is of that size; a wrong channel is
of the size of the channel's contribution, orders of magnitude above it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RTOL, ATOL = 1e-4, 1e-5  # elementwise rtol; atol relative to the output's largest magnitude
NOISE_FACTOR = 10.0  # atol is at least this multiple of the output's measured float noise


def as_array(value) -> np.ndarray:
    """An output as an array: sequences of arrays stacked, sequences of maps as rows of their
    values by sorted key."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], dict):
            keys = sorted(value[0])
            return np.array([[row[k] for k in keys] for row in value], np.float64)
        return np.stack([np.asarray(v) for v in value]) if value else np.zeros(0)
    return np.asarray(value)


@dataclass(frozen=True)
class OutputCheck:
    """One output's comparison: the largest difference, the tolerance it was held to."""

    name: str
    max_abs: float
    scale: float  # largest reference magnitude
    atol: float
    noise: float  # measured float noise (0: not measured)
    passed: bool

    @property
    def margin(self) -> float:
        """How much of the tolerance the worst element used (> 1: failed)."""
        return self.max_abs / self.atol if self.atol > 0 else (0.0 if self.max_abs == 0 else np.inf)

    def describe(self) -> str:
        why = (f"{NOISE_FACTOR:g} x its float noise {self.noise:.2g}" if self.noise
               and self.atol > ATOL * max(1.0, self.scale) else
               f"{ATOL:g} x max(1, |output|)")
        return (f"output {self.name}: max abs diff {self.max_abs:.3g}, tolerance {self.atol:.3g} "
                f"({why}) + {RTOL:g} x |value|")


def check_outputs(got: Sequence, want: Sequence, names: Sequence[str] | None = None,
                  noise: Sequence[float] | None = None, rtol: float = RTOL,
                  atol: float = ATOL) -> list[OutputCheck]:
    out = []
    names = list(names or [f"#{i}" for i in range(len(want))])
    noise = list(noise or [0.0] * len(want))
    for name, g, w, n in zip(names, got, want, noise, strict=True):
        g, w = as_array(g), as_array(w)
        if g.shape != w.shape:
            out.append(OutputCheck(name, float("inf"), 0.0, 0.0, n, False))
            continue
        if not np.issubdtype(w.dtype, np.number) and w.dtype != bool:
            same = bool(np.array_equal(g, w))
            out.append(OutputCheck(name, 0.0 if same else float("inf"), 0.0, 0.0, n, same))
            continue
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        # infinities and the type's extremes are sentinels (a class that cannot occur reads
        # the lowest float): they must match exactly and give the tolerance no scale
        mark = _sentinels(w, w64)
        scale = float(np.max(np.abs(np.where(mark, 0.0, w64)), initial=0.0))
        tol = max(atol * max(1.0, scale), NOISE_FACTOR * n)
        with np.errstate(invalid="ignore"):
            diff = np.where(mark, np.where(g64 == w64, 0.0, np.inf), np.abs(g64 - w64))
        nan_ok = np.array_equal(np.isnan(g64), np.isnan(w64))
        worst = float(np.nanmax(diff, initial=0.0)) if diff.size else 0.0
        passed = nan_ok and bool(np.all((diff <= tol + rtol * np.where(mark, 0.0, np.abs(w64)))
                                        | np.isnan(w64)))
        out.append(OutputCheck(name, worst if nan_ok else float("inf"), scale, tol, n, passed))
    return out


def _sentinels(w: np.ndarray, w64: np.ndarray) -> np.ndarray:
    """Where ``w`` holds an infinity or its float type's largest magnitude."""
    if w.dtype.kind != "f":
        return np.zeros(w.shape, bool)
    return np.isinf(w64) | (np.abs(w64) >= float(np.finfo(w.dtype).max))


def output_noise(base: Sequence, perturbed: Sequence) -> list[float]:
    """Per output, the largest change between two runs that differ only by float noise."""
    return [float(np.max(np.abs(as_array(a).astype(np.float64) - as_array(b).astype(np.float64)),
                         initial=0.0)) if as_array(a).shape == as_array(b).shape else 0.0
            for a, b in zip(base, perturbed, strict=True)]


def max_diffs(got: Sequence, want: Sequence) -> tuple[float, float]:
    """The largest absolute difference over all outputs, and relative to the largest
    reference magnitude."""
    abs_diff, scale = 0.0, 0.0
    for g, w in zip(got, want, strict=True):
        g, w = as_array(g), as_array(w)
        if g.shape != w.shape:
            return float("inf"), float("inf")
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        mark = _sentinels(w, w64)  # matched exactly or not at all: no magnitude
        with np.errstate(invalid="ignore"):
            diff = np.where(mark, np.where(g64 == w64, 0.0, np.inf), np.abs(g64 - w64))
        abs_diff = max(abs_diff, float(np.nanmax(diff, initial=0.0)))
        scale = max(scale, float(np.max(np.abs(np.where(mark, 0.0, w64)), initial=0.0)))
    return abs_diff, abs_diff / max(scale, 1e-12)


def close(got: Sequence, want: Sequence, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """Every output within ``atol * max(1, |output|) + rtol * |value|`` (no noise term)."""
    return all(c.passed for c in check_outputs(got, want, rtol=rtol, atol=atol))
