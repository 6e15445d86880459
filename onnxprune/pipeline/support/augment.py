"""More data for a refit: copies of the calibration samples in other styles.

Compensation reproduces the original model's function on the data it is given; fitted on a
narrow style (templated sentences, one font) it learns that style and breaks others. Since it
matches the original's outputs, any input is a valid sample, so copies that keep what the
data is about and change its style widen what the refit reproduces:

- token ids: the content tokens replaced by random ids of the range the data uses (the
  random-token probe's construction, other seeds): MiniLM's held-out cosine 0.435 -> 0.681;
- images (4-D float inputs, channels first or last): strokes thickened or thinned, slanted and
  stretched horizontally, contrast, brightness, blur and noise changed: PP-OCR rec's held-out
  character accuracy through the whole pipeline 0.673 -> 0.708 (see the README).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ...ir.arrays import Calibration
from .probe import token_inputs, token_probe

MIN_SIDE = 16  # an image's height and width, at least
CHANNELS = (1, 3, 4)


def image_inputs(graph: gs.Graph, data: Calibration) -> dict[str, int]:
    """Float inputs holding images, batch first: name -> channel axis (1 or 3)."""
    out = {}
    for t in graph.inputs:
        a = data.get(t.name)
        if a is None or np.ndim(a) != 4 or data.axes.get(t.name, 0) != 0:
            continue
        if not np.issubdtype(np.asarray(a).dtype, np.floating):
            continue
        shape = np.shape(a)
        if shape[1] in CHANNELS and min(shape[2:]) >= MIN_SIDE:
            out[t.name] = 1
        elif shape[3] in CHANNELS and min(shape[1:3]) >= MIN_SIDE:
            out[t.name] = 3
    return out


def restyle(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One restyled copy of images ``x`` [N, C, H, W] (values kept in the data's range)."""
    lo, hi = float(x.min()), float(x.max())
    span = max(hi - lo, 1e-6)
    out = np.empty_like(x)
    for i, img in enumerate(x):
        a = img.astype(np.float32)
        pick = rng.random()
        if pick < 1 / 3:
            a = _shifted(a, np.minimum)
        elif pick < 2 / 3:
            a = _shifted(a, np.maximum)
        a = _slant(a, rng.uniform(-0.25, 0.25), rng.uniform(0.8, 1.15))
        mean = float(a.mean())
        a = (a - mean) * rng.uniform(0.5, 1.0) + mean + rng.uniform(-0.15, 0.15) * span
        if rng.random() < 0.5:
            a = _blur(a)
        a = a + rng.normal(0.0, rng.uniform(0.0, 0.03) * span, a.shape)
        out[i] = np.clip(a, lo, hi)
    return out


def _shifted(a: np.ndarray, op) -> np.ndarray:
    """A 2x2 minimum or maximum filter (strokes of one colour thicken, of the other thin)."""
    p = np.pad(a, ((0, 0), (0, 1), (0, 1)), mode="edge")
    return op(op(p[:, :-1, :-1], p[:, 1:, :-1]), op(p[:, :-1, 1:], p[:, 1:, 1:]))


def _slant(a: np.ndarray, shear: float, scale: float) -> np.ndarray:
    """Rows resampled along the width: slanted by ``shear`` (x per y about the centre) and
    stretched by ``scale``, linearly interpolated, edges repeated."""
    _, h, w = a.shape
    ys = np.arange(h, dtype=np.float32)[:, None] - (h - 1) / 2
    src = np.arange(w, dtype=np.float32)[None, :] / scale - shear * ys
    src = np.clip(src, 0, w - 1)
    left = np.floor(src).astype(np.int64)
    right = np.minimum(left + 1, w - 1)
    frac = (src - left)[None]
    rows = np.arange(h)[:, None]
    return a[:, rows, left] * (1 - frac) + a[:, rows, right] * frac


def _blur(a: np.ndarray) -> np.ndarray:
    """A 3x3 binomial blur, edges repeated."""
    p = np.pad(a, ((0, 0), (1, 1), (1, 1)), mode="edge")
    v = (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) / 4
    return (v[:, :, :-2] + 2 * v[:, :, 1:-1] + v[:, :, 2:]) / 4


def _followed_by(data: Calibration, copies: list[dict]) -> Calibration:
    """``data`` with each copy's samples after its own (arrays fed whole stay as they are)."""
    out = {}
    for name, value in data.items():
        axis = data.axes.get(name, 0)
        out[name] = value if axis is None else np.concatenate(
            [np.asarray(value)] + [np.asarray(c[name]) for c in copies], axis=axis)
    return Calibration(out, dict(data.axes))


def with_token_copies(graph: gs.Graph, data: Calibration, copies: int, seed: int = 1000
                      ) -> Calibration | None:
    """``data`` followed by ``copies`` of itself with random content tokens (``token_probe``
    with seeds ``seed``, ``seed + 1``, ...); None when the model reads no token ids."""
    if copies <= 0:
        return None
    parts = [token_probe(graph, data, seed + i) for i in range(copies)]
    return None if parts[0] is None else _followed_by(data, parts)


def with_image_copies(graph: gs.Graph, data: Calibration, copies: int, seed: int = 2000
                      ) -> Calibration | None:
    """``data`` followed by ``copies`` restyled copies of its images (other inputs repeated);
    None when the model reads no images."""
    images = image_inputs(graph, data)
    if copies <= 0 or not images:
        return None
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(copies):
        part = dict(data)
        for name, axis in images.items():
            x = np.asarray(data[name])
            nchw = x if axis == 1 else x.transpose(0, 3, 1, 2)
            new = restyle(nchw, rng)
            part[name] = (new if axis == 1 else new.transpose(0, 2, 3, 1)).astype(x.dtype)
        parts.append(part)
    return _followed_by(data, parts)


def augmented(graph: gs.Graph, data: Calibration, copies: int
              ) -> tuple[Calibration, str] | None:
    """(``data`` with ``copies`` copies in other styles, the style): random tokens for a model
    that reads token ids, restyled images for one that reads images; None when it reads
    neither."""
    if token_inputs(graph):
        more, style = with_token_copies(graph, data, copies), "random tokens"
    else:
        more, style = with_image_copies(graph, data, copies), "restyled images"
    return None if more is None else (more, style)
