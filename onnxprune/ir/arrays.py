"""Arrays in ``.npz`` files: calibration data keyed by model input name."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["Calibration", "axes_of", "load_npz", "save_npz"]


def load_npz(path: str | os.PathLike, *, batch_first: bool = True) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, by name (for calibration: one per model input).

    With ``batch_first`` (the default) every array must have a leading batch axis, the same
    length for all. Raises ``ValueError`` for a file that is not a valid, non-empty ``.npz``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: " + ("not a file" if p.exists() else "no such file"))
    if not zipfile.is_zipfile(p):
        with open(p, "rb") as f:
            npy = f.read(6) == b"\x93NUMPY"
        what = "a single .npy array, expected an .npz archive" if npy else "not a zip archive"
        raise ValueError(f"{p}: not a valid .npz file ({what})")
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{p}: not a valid .npz file ({err})") from err
    if not arrays:
        raise ValueError(f"{p}: the .npz file holds no arrays")
    if batch_first:
        scalars = [k for k, v in arrays.items() if v.ndim == 0]
        if scalars:
            raise ValueError(f"{p}: arrays {scalars} have no batch axis (0-d)")
        batches = {k: v.shape[0] for k, v in arrays.items()}
        if len(set(batches.values())) > 1:
            raise ValueError(f"{p}: arrays disagree on the batch size: {batches}")
    return arrays


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> str:
    """Write ``arrays`` (uncompressed) to exactly ``path``; returns the path."""
    if not arrays:
        raise ValueError("save_npz needs at least one array")
    path = os.fspath(path)
    with open(path, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    return path


class Calibration(dict):
    """Calibration arrays by name, each with the axis its samples run along (``axes``; None: an
    array fed whole to every batch, such as a pinned scalar). Labels run along axis 0."""

    def __init__(self, arrays: dict[str, np.ndarray], axes: dict[str, int | None] | None = None):
        super().__init__(arrays)
        self.axes = {k: (axes or {}).get(k, 0 if np.ndim(v) else None) for k, v in arrays.items()}

    @property
    def samples(self) -> int:
        sizes = {np.shape(v)[a] for k, v in self.items() if (a := self.axes.get(k)) is not None}
        return sizes.pop() if len(sizes) == 1 else 0

    @property
    def batch_first(self) -> bool:
        """Every array runs along axis 0 or is fed whole (what batched evaluation needs)."""
        return all(a in (0, None) for a in self.axes.values())

    def take(self, index: np.ndarray) -> Calibration:
        """The samples at ``index`` (arrays fed whole stay whole)."""
        return Calibration({k: v if self.axes.get(k) is None else np.take(v, index, axis=self.axes[k])
                            for k, v in self.items()}, self.axes)


def axes_of(arrays: dict[str, np.ndarray]) -> dict[str, int | None]:
    """The sample axis of each array (``Calibration.axes``; a plain dict: axis 0)."""
    return getattr(arrays, "axes", None) or {k: 0 if np.ndim(v) else None
                                             for k, v in arrays.items()}
