"""How many of a classifier's classes the calibration data makes the original model answer.

A model whose output is a distribution over many classes (a text recognizer's 18,710
characters, an ImageNet classifier's 1,000) is measured, by any metric, on the classes the
calibration data makes it answer: channels that only the other classes need read as free to
every search, and compensation refits the output layer to the answers it sees. PP-OCR's
recognizer calibrated on lower-case words (33 of its classes answered) and cut by 30% read
held-out lines with capitals, digits and punctuation at 0.706 character accuracy through the
whole pipeline; calibrated on lines in the same style that hold those characters (62
answered, other words than the held-out lines'), the same recipe read 0.963 (original 0.997;
benchmarks/README.md).
The run says so once, on the original's outputs it computes anyway (the search's reference,
the stages' unpruned row), and reports it (``--json`` "stages" "classes_answered").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import warn
from ...search.quality import is_distribution
from ..base import Context

MIN_CLASSES = 3  # a distribution over two classes is a decision, not a vocabulary
SHARE = 0.5  # fewer classes answered than this share of them: said


def answered(outputs: Sequence[np.ndarray], names: Sequence[str]) -> list[dict]:
    """Per output that is a distribution over its last axis of at least ``MIN_CLASSES``
    classes: how many of them the original answers (its argmax) on these samples."""
    rows = []
    for out, name in zip(outputs, names, strict=True):
        out = np.asarray(out)
        if out.ndim < 2 or out.shape[-1] < MIN_CLASSES or not is_distribution(out):
            continue
        seen = int(np.unique(out.reshape(-1, out.shape[-1]).argmax(-1)).size)
        rows.append({"output": name, "classes": int(out.shape[-1]), "answered": seen})
    return rows


def check(ctx: Context, outputs: Sequence[np.ndarray], names: Sequence[str]) -> None:
    """Record (once a run) how many classes the original answers on the calibration data, and
    warn for each output that answers fewer than ``SHARE`` of them."""
    if ctx.resources.classes_answered is not None:
        return
    ctx.resources.classes_answered = rows = answered(outputs, names)
    for row in rows:
        if row["answered"] < SHARE * row["classes"]:
            warn(f"calibration: the original model answers {row['answered']:,} of the "
                 f"{row['classes']:,} classes of output {row['output']!r} on the calibration "
                 "data; a cut is measured on those alone, and what the others need reads as "
                 "free: give data in which the application's other classes appear, or keep "
                 "only the classes it needs (--keep-classes)")
