"""Task-shaped agreement metrics for benchmarks/task_quality.py, given to onnxprune as
``metric="benchmarks/task_metrics.py:NAME"``. Each is ``fn(outputs, batch) -> float``, higher is
better; the original model's answers travel in the calibration data as extra arrays (split with
the samples, so the held-out share carries its own):

- ``det_agreement``: text-probability maps against the original's map binarized at rapidocr's
  threshold (``ref_mask``): mean of the per-image F1 of the binarized maps and the soft Dice
  (which moves before the F1 does). An all-zero map scores 0.
- ``ctc_agreement``: recognizer outputs (softmax over the dictionary, per time step) decoded the
  way rapidocr decodes them (argmax, repeats merged, blank 0 dropped) against the original's
  decoded ids (``ref_ids``): mean of 1 - normalized edit distance, plus 0.01 x the mean
  probability given to the original's token at every step (a tie-breaker).
- ``cls_agreement``: orientation classifier against the true orientation (``labels``):
  accuracy plus 0.01 x the mean probability of the true class.
"""

from __future__ import annotations

import numpy as np

DET_THRESH = 0.3  # rapidocr's Det.thresh


def det_agreement(outputs, batch) -> float:
    p = outputs[0].reshape(len(outputs[0]), -1).astype(np.float64)
    r = batch["ref_mask"].reshape(len(p), -1).astype(np.float64)
    b = (p > DET_THRESH).astype(np.float64)
    inter = (b * r).sum(1)
    f1 = np.where(b.sum(1) + r.sum(1) > 0, 2 * inter / np.maximum(b.sum(1) + r.sum(1), 1), 1.0)
    soft = np.where(p.sum(1) + r.sum(1) > 0,
                    2 * (p * r).sum(1) / np.maximum(p.sum(1) + r.sum(1), 1e-12), 1.0)
    return float(np.mean(0.5 * f1 + 0.5 * soft))


def ctc_decode(ids: np.ndarray) -> list[int]:
    """argmax ids of one line -> tokens (repeats merged, blank 0 dropped), as rapidocr does."""
    keep = np.ones(len(ids), bool)
    keep[1:] = ids[1:] != ids[:-1]
    return [int(i) for i in ids[keep] if i != 0]


def edit_distance(a, b) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def char_accuracy(pred, truth) -> float:
    """1 - normalized edit distance (0 at worst), the OCR character accuracy."""
    if not truth:
        return 1.0 if not pred else 0.0
    return max(0.0, 1.0 - edit_distance(pred, truth) / len(truth))


def ctc_agreement(outputs, batch) -> float:
    probs = outputs[0]
    ref = batch["ref_ids"]
    ids = probs.argmax(-1)
    acc = [char_accuracy(ctc_decode(a), ctc_decode(b)) for a, b in zip(ids, ref, strict=True)]
    p_ref = np.take_along_axis(probs, ref[..., None].astype(np.int64), axis=-1).mean()
    return float(np.mean(acc) + 0.01 * p_ref)


def cls_agreement(outputs, batch) -> float:
    probs = outputs[0]
    labels = batch["labels"].reshape(-1).astype(np.int64)
    acc = (probs.argmax(-1) == labels).mean()
    return float(acc + 0.01 * probs[np.arange(len(labels)), labels].mean())
