"""Image data for training and calibration: an MNIST-like set built from scikit-learn's digits,
real MNIST from a user path (IDX or ``.npz``), and calibration arrays in ``.npz`` files.

Images are returned as float32 ``[N, 1, 28, 28]`` in ``[0, 1]``, labels as int64 ``[N]``.
"""

from __future__ import annotations

import functools
import gzip
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..ir.arrays import load_npz

__all__ = ["digits28", "load_mnist"]

SIZE = 28
# The 8x8 digit is upsampled to 24x24 and centred with this border, as MNIST centres its digits.
BORDER = 2

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_NPZ_IMAGES, _NPZ_LABELS = ("x", "images"), ("y", "labels")
_SPLITS = ("train", "test")
_Set = tuple[np.ndarray, np.ndarray | None]  # images and labels (or None)


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` weights of 1-D linear interpolation with half-pixel centres."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


@functools.lru_cache(maxsize=1)
def _digits28_all() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(
            "digits28 needs scikit-learn (pip install 'onnxprune[examples]')"
        ) from err
    digits = load_digits()
    images = digits.images / 16.0  # [N, 8, 8], values 0..16
    inner = SIZE - 2 * BORDER
    m = _bilinear_matrix(images.shape[1], inner)
    up = np.einsum("ij,njk,lk->nil", m, images, m)
    x = np.zeros((len(images), 1, SIZE, SIZE), np.float32)
    x[:, 0, BORDER : SIZE - BORDER, BORDER : SIZE - BORDER] = np.clip(up, 0.0, 1.0)
    return x, digits.target.astype(np.int64)


def _stratified_test_mask(labels: np.ndarray, seed: int, test_fraction: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        mask[rng.permutation(idx)[: int(round(len(idx) * test_fraction))]] = True
    return mask


def digits28(
    split: str = "train", seed: int = 0, test_fraction: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits as an MNIST-like set: ``(images, labels)``.

    Each digit is bilinearly upsampled to 24x24 and centred in a 28x28 image (a 2-pixel
    border). ``split`` is ``"train"`` or ``"test"``: a stratified split, ``test_fraction`` of
    every class in the test set, determined by ``seed``. Samples keep the dataset's order.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), not {test_fraction}")
    x, y = _digits28_all()
    test = _stratified_test_mask(y, seed, test_fraction)
    keep = test if split == "test" else ~test
    return x[keep], y[keep]


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_idx(path: Path) -> np.ndarray:
    """One IDX file (optionally gzipped) as an array of its stored shape."""
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot be read as an IDX file ({err})") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: not an IDX file (bad magic number); expected an IDX images file, "
            "an .npz or a directory of IDX files"
        )
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    count = int(np.prod(shape)) if shape else 1
    if len(data) - header != count * dtype.itemsize:
        raise ValueError(
            f"{path}: IDX header says shape {shape} ({count * dtype.itemsize} bytes of data) "
            f"but the file holds {len(data) - header}"
        )
    return np.frombuffer(data, dtype, count, header).reshape(shape)


def _as_images(x: np.ndarray, source: object) -> np.ndarray:
    """MNIST-like images in any common layout as float32 ``[N, 1, 28, 28]`` in ``[0, 1]``."""
    x = np.asarray(x)
    if x.dtype.kind not in "uif":
        raise ValueError(f"{source}: images must be numeric, got dtype {x.dtype}")
    n = x.shape[0] if x.ndim else 0
    if x.shape in ((n, SIZE * SIZE), (n, SIZE, SIZE), (n, 1, SIZE, SIZE), (n, SIZE, SIZE, 1)):
        x = x.reshape(n, 1, SIZE, SIZE)
    else:
        raise ValueError(
            f"{source}: expected 28x28 images as [N,28,28], [N,784], [N,1,28,28] or "
            f"[N,28,28,1], got shape {x.shape}"
        )
    x = x.astype(np.float32)
    if x.size and x.max() > 1.0:
        x /= 255.0
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise ValueError(f"{source}: pixel values must lie in [0, 1] or [0, 255]")
    return x


def _as_labels(y: np.ndarray | None, n: int, source: object) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y).reshape(-1) if np.ndim(y) == 2 and np.shape(y)[1] == 1 else np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"{source}: labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if len(y) != n:
        raise ValueError(f"{source}: {len(y)} labels for {n} images")
    return y.astype(np.int64)


def _labels_path(images: Path) -> Path | None:
    name = images.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1")
    if name == images.name:
        return None
    base = name.removesuffix(".gz")
    for candidate in (base, base + ".gz"):
        if (images.parent / candidate).is_file():
            return images.parent / candidate
    return None


def _load_idx_images(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    x = _as_images(_read_idx(path), path)
    labels = _labels_path(path)
    return x, None if labels is None else _as_labels(_read_idx(labels), len(x), labels)


def _select_split(path: Path, sets: dict[str, _Set], split: str | None) -> _Set:
    if split is not None:
        if split not in sets:
            raise ValueError(f"{path}: has no {split} set (found {sorted(sets)})")
        return sets[split]
    parts = [sets[s] for s in _SPLITS if s in sets]
    x = np.concatenate([p[0] for p in parts])
    labelled = all(p[1] is not None for p in parts)
    return x, np.concatenate([p[1] for p in parts]) if labelled else None


def _split_of(name: str) -> str | None:
    if name.startswith("train"):
        return "train"
    return "test" if name.startswith(("t10k", "test")) else None


def _load_mnist_dir(path: Path, split: str | None) -> _Set:
    sets = {}
    for f in sorted(path.iterdir()):
        if "images-idx3" not in f.name and "images.idx3" not in f.name:
            continue
        s = _split_of(f.name)
        if s is not None and s not in sets:
            sets[s] = _load_idx_images(f)
    if not sets:
        raise ValueError(f"{path}: no MNIST IDX files (train-/t10k-images-idx3-ubyte[.gz])")
    return _select_split(path, sets, split)


def _load_mnist_npz(path: Path, split: str | None) -> _Set:
    arrays = load_npz(path, batch_first=False)
    if "x_train" in arrays or "x_test" in arrays:
        sets = {}
        for s in _SPLITS:
            if f"x_{s}" in arrays:
                x = _as_images(arrays[f"x_{s}"], f"{path}[x_{s}]")
                sets[s] = (x, _as_labels(arrays.get(f"y_{s}"), len(x), f"{path}[y_{s}]"))
        return _select_split(path, sets, split)
    if split is not None:
        raise ValueError(f"{path}: holds a single set (no x_train/x_test); pass split=None")
    key = next((k for k in _NPZ_IMAGES if k in arrays), None)
    if key is None:
        raise ValueError(
            f"{path}: no images array; expected one of 'x', 'images', 'x_train', 'x_test' "
            f"(found {sorted(arrays)})"
        )
    x = _as_images(arrays[key], f"{path}[{key}]")
    label_key = next((k for k in _NPZ_LABELS if k in arrays), None)
    y = arrays[label_key] if label_key else None
    return x, _as_labels(y, len(x), f"{path}[{label_key}]")


def load_mnist(
    path: str | os.PathLike, split: str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Real MNIST (or any 28x28 grey-scale set) from ``path``: ``(images, labels or None)``.

    ``path`` is one of:

    - an IDX images file, ``*-images-idx3-ubyte`` (``.gz`` or not); the labels file next to
      it (``*-labels-idx1-ubyte[.gz]``) is read when present, else labels are ``None``;
    - a directory of such files (``train-*`` and ``t10k-*``);
    - an ``.npz`` with images under ``x`` or ``images`` and labels under ``y`` or ``labels``,
      or Keras' ``mnist.npz`` (``x_train``, ``y_train``, ``x_test``, ``y_test``).

    For sources holding a train and a test set, ``split`` picks ``"train"`` or ``"test"``;
    ``None`` returns both concatenated, train first. Single-set sources take ``split=None``.
    Images may be uint8 (0..255) or float (``[0, 1]`` or ``[0, 255]``).
    """
    if split is not None and split not in _SPLITS:
        raise ValueError(f"split must be 'train', 'test' or None, not {split!r}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    if p.is_dir():
        return _load_mnist_dir(p, split)
    if p.suffix == ".npz" or zipfile.is_zipfile(p):
        return _load_mnist_npz(p, split)
    if split is not None:
        raise ValueError(f"{p}: an IDX file is a single set; pass split=None")
    return _load_idx_images(p)
