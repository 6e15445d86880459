"""Audio as calibration arrays: WAV/FLAC/OGG files read with soundfile, mixed to mono,
resampled (scipy's polyphase resampler) to the sample rate asked, cut into pieces of the
input's length (the last piece of each file dropped when short)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .common import need

EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")


def find(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS)


def read(path: Path, rate: int) -> np.ndarray:
    """Mono float32 samples of ``path`` at ``rate`` Hz."""
    sf = need("soundfile", "soundfile", "audio")
    try:
        data, native = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, sf.LibsndfileError) as err:
        raise UsageError(f"{path}: not a readable audio file ({err})") from None
    return resample(data.mean(axis=1), native, rate)


def resample(x: np.ndarray, native: int, rate: int) -> np.ndarray:
    """``x`` sampled at ``native`` Hz, at ``rate`` Hz (scipy's polyphase filter), float32."""
    x = np.asarray(x, np.float32)
    if int(native) == int(rate):
        return x
    from scipy.signal import resample_poly

    f = Fraction(int(rate), int(native)).limit_denominator(1000)
    return resample_poly(x, f.numerator, f.denominator).astype(np.float32)


def cut(recordings, length: int, rate: int, where: str) -> np.ndarray:
    """Every whole piece of ``length`` samples of every recording, [pieces, length]."""
    out = []
    for x in recordings:
        k = len(x) // length
        out.extend(x[: k * length].reshape(k, length))
    if not out:
        raise UsageError(f"{where}: no recording holds {length} samples at {rate} Hz")
    return np.stack(out).astype(np.float32)


def pieces(files: list[Path], rate: int, length: int) -> np.ndarray:
    """Every whole piece of ``length`` samples of every file, [pieces, length]."""
    return cut((read(f, rate) for f in files), length, rate, f"{len(files)} audio file(s)")
