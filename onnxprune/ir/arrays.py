"""Arrays in ``.npz`` files: calibration data keyed by model input name."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["load_npz", "save_npz"]


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
