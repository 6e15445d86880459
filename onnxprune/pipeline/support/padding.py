"""Padding every calibration sample shares, trimmed from the sequence inputs before anything
runs on them.

Token arrays are often padded to a fixed length (a tokenizer's ``padding="max_length"``): 64
sentences of 8-13 tokens padded to 32 are 60% padding, and every evaluation of a search, every
refit row and every training step pays for it, for positions the attention mask hides from
every real token (MiniLM's recipe: 106 s on such arrays, 31 s on the same sentences padded to
the longest). The trailing columns the attention mask zeroes in every sample are dropped from
every input of that sequence axis, as a text reader padding to the longest writes them,
once the original model is shown to compute the same there: its outputs on a few samples, at
the full length and trimmed, agree (outputs with the sequence axis at their kept positions,
the rest whole). Otherwise (a mask that does not mask, a length the model needs) the data is
used as given. Refits then fit real tokens' activations only where they fitted the padding's
too (the padded rows are not what the application computes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...calib.text import is_mask
from ...ir.arrays import Calibration
from ...ir.runtime import session
from ...ir.shapes import input_specs
from ...ir.weights import proto

PROOF_SAMPLES = 8
# float32 sums over the kept positions reassociate when the sequence is shorter (other
# kernel blocking); a mask that leaked would move outputs by the padded share, percents
TOLERANCE = 1e-4


@dataclass(frozen=True)
class Trimmed:
    names: tuple[str, ...]  # the inputs trimmed
    before: int
    after: int

    def __str__(self) -> str:
        return (f"trimmed to {self.after} of {self.before} positions (the padding every sample "
                f"masks; {', '.join(self.names)})")


def _mask_input(data: Calibration, specs: dict) -> tuple[str, object] | None:
    """(name, sequence symbol) of a 2-D 0/1 attention mask with a named dynamic sequence axis."""
    for name, spec in specs.items():
        if not is_mask(name) or name not in data:
            continue
        arr = np.asarray(data[name])
        if arr.ndim != 2 or data.axes.get(name) != 0 or len(spec.dims) != 2 \
                or arr.dtype.kind not in "iub":
            continue
        symbol = spec.dims[1]
        if isinstance(symbol, str) and symbol and np.isin(arr, (0, 1)).all():
            return name, symbol
    return None


def shared_padding(model, data: Calibration) -> tuple[dict[str, int], int, int] | None:
    """({input: its sequence axis}, full length, kept length) of the trailing positions every
    sample masks; None when there are none."""
    specs = {s.name: s for s in input_specs(proto(model))}
    found = _mask_input(data, specs)
    if found is None:
        return None
    mask_name, symbol = found
    mask = np.asarray(data[mask_name])
    full = mask.shape[1]
    used = np.flatnonzero(mask.any(axis=0))
    kept = int(used[-1]) + 1 if used.size else 0
    if kept in (0, full):
        return None
    axes = {}
    for name, spec in specs.items():
        hits = [i for i, d in enumerate(spec.dims) if d == symbol]
        if name in data and len(hits) == 1 and data.axes.get(name) == 0 \
                and np.shape(data[name])[hits[0]] == full:
            axes[name] = hits[0]
    return axes, full, kept


def _cut(data: dict, axes: dict[str, int], kept: int) -> dict:
    return {k: np.take(v, np.arange(kept), axis=axes[k]) if k in axes else v
            for k, v in data.items()}


def _same(full: list[np.ndarray], short: list[np.ndarray], length: int, kept: int) -> bool:
    for a, b in zip(full, short, strict=True):
        if a.shape != b.shape:
            diff = [i for i, (x, y) in enumerate(zip(a.shape, b.shape, strict=False)) if x != y]
            if a.ndim != b.ndim or len(diff) != 1 or (a.shape[diff[0]], b.shape[diff[0]]) != \
                    (length, kept):
                return False
            a = np.take(a, np.arange(kept), axis=diff[0])
        if a.dtype.kind != "f":
            if not np.array_equal(a, b):
                return False
            continue
        scale = float(np.abs(a).max()) if a.size else 0.0
        if not np.all(np.isfinite(b)) or float(np.abs(a - b).max(initial=0.0)) > \
                TOLERANCE * max(scale, 1e-6):
            return False
    return True


def trim_padding(model, data: Calibration) -> tuple[Calibration, Trimmed | None]:
    """``data`` without the trailing positions every sample masks, when the model's outputs
    on its first samples are the same without them; else ``data`` as it is."""
    found = shared_padding(model, data)
    if found is None:
        return data, None
    axes, full, kept = found
    inputs = {s.name for s in input_specs(proto(model))}
    feeds = {k: v if data.axes.get(k) is None else v[:PROOF_SAMPLES]
             for k, v in data.items() if k in inputs}
    try:
        sess = session(model, quiet=True)
        same = _same(sess.run(None, feeds), sess.run(None, _cut(feeds, axes, kept)), full, kept)
    except Exception:  # noqa: BLE001 - a model that will not run shorter keeps its length
        return data, None
    if not same:
        return data, None
    return (Calibration(_cut(dict(data), axes, kept), data.axes),
            Trimmed(tuple(sorted(axes)), full, kept))
