"""Application metrics: how well a (gated or pruned) model still does its job.

Every metric takes the model's outputs, the calibration batch (inputs and optional labels)
and the original model's outputs on that batch, and returns a float.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError, first_line

Outputs = list[np.ndarray]
Batch = dict[str, np.ndarray]
LABEL_KEYS = ("labels", "label", "y", "targets")


@dataclass(frozen=True)
class Metric:
    """``fn(outputs, batch, reference)``; or a *model* metric judging the model itself
    (closed-loop use, e.g. episodes): ``on_model="run"`` calls ``fn(run)`` with
    ``run(feeds) -> outputs``; ``on_model="model"`` calls ``fn(model)`` with a standalone
    ``onnx.ModelProto`` equivalent to the candidate."""

    name: str
    higher_is_better: bool
    fn: Callable
    needs_labels: bool = False
    on_model: str | None = None
    against_reference: bool = False  # measures agreement with the original model's outputs

    builtin: bool = False

    def __call__(self, outputs: Outputs, batch: Batch, reference: Outputs) -> float:
        return self.value_of(self.fn, outputs, batch, reference)

    def value_of(self, fn: Callable, *args) -> float:
        """``fn(*args)`` as a float; a user function's failure is the user's error (one line)."""
        if self.builtin:
            return float(fn(*args))
        try:
            return float(fn(*args))
        except UsageError:
            raise
        except Exception as err:  # noqa: BLE001 - the user's code: report, do not crash
            raise UsageError(f"--metric {self.name}: the function raised "
                             f"{type(err).__name__}: {first_line(err)}") from None

    def utility(self, value: float) -> float:
        """The value oriented so that higher is better (not a number: the worst)."""
        if value != value:
            return -np.inf
        return value if self.higher_is_better else -value

    def satisfies(self, value: float, op: str, bound: float) -> bool:
        return value >= bound if op == ">=" else value <= bound


def _image_input(batch: Batch) -> np.ndarray:
    for key, value in batch.items():
        if key not in LABEL_KEYS and np.issubdtype(value.dtype, np.floating):
            return value
    raise UsageError("psnr/mse compare the output with the model's (float) input; none found")


def _per_sample_mse(out: np.ndarray, x: np.ndarray) -> np.ndarray:
    if out.shape != x.shape:
        raise UsageError(f"psnr/mse need the output shape {out.shape} to equal the input's {x.shape}")
    diff = out.astype(np.float64) - x.astype(np.float64)
    return (diff**2).reshape(len(diff), -1).mean(axis=1)


def psnr(outputs: Outputs, batch: Batch, reference: Outputs) -> float:
    """Reconstruction PSNR in dB against the input (peak 1 for data in [0, 1]), mean over samples."""
    x = _image_input(batch)
    peak = 1.0 if float(np.max(x)) <= 1.0 + 1e-6 else float(np.max(np.abs(x)))
    mse = np.maximum(_per_sample_mse(outputs[0], x), 1e-12)
    return float(np.mean(10.0 * np.log10(peak**2 / mse)))


def mse(outputs: Outputs, batch: Batch, reference: Outputs) -> float:
    return float(np.mean(_per_sample_mse(outputs[0], _image_input(batch))))


def labels_of(batch: Batch) -> np.ndarray:
    for key in LABEL_KEYS:
        if key in batch:
            return batch[key]
    raise UsageError(f"accuracy needs labels in the calibration file (key one of {LABEL_KEYS})")


def accuracy(outputs: Outputs, batch: Batch, reference: Outputs) -> float:
    return float(np.mean(np.argmax(outputs[0], axis=-1) == labels_of(batch).reshape(-1)))


def cosine(outputs: Outputs, batch: Batch, reference: Outputs) -> float:
    """Mean cosine similarity of each output with the original model's, per sample."""
    sims = []
    for out, ref in zip(outputs, reference, strict=True):
        a = out.reshape(len(out), -1).astype(np.float64)
        b = ref.reshape(len(ref), -1).astype(np.float64)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        den = na * nb
        # zero against non-zero is no agreement at all; zero against zero is identical
        same = np.where((na == 0) & (nb == 0), 1.0, 0.0)
        sims.append(np.where(den > 0, (a * b).sum(axis=1) / np.maximum(den, 1e-300), same))
    return float(np.mean(np.concatenate(sims)))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


PROB_SUM_TOL = 1e-3  # float32 softmax rows sum to 1 within ~1e-6; logits almost never do
TINY = 1e-12  # the floor of a probability before its log (an exact 0 from a Softmax)


def is_distribution(x) -> bool:
    """``x`` already holds probabilities over its last axis (a model ending in Softmax): no
    negative entry and every row summing to 1. Such outputs are compared as they are; a
    softmax over them would flatten every row towards uniform (PP-OCR's recognizer)."""
    x = np.asarray(x)
    if not x.size or not np.issubdtype(x.dtype, np.floating) or x.min() < 0:
        return False
    return bool(np.abs(x.sum(axis=-1, dtype=np.float64) - 1.0).max() <= PROB_SUM_TOL)


def _log_dist(x: np.ndarray, probs: bool) -> np.ndarray:
    if probs:
        return np.log(np.clip(x.astype(np.float64), TINY, None))
    return _log_softmax(x)


def kl(outputs: Outputs, batch: Batch, reference: Outputs) -> float:
    """KL(original || pruned) over the last axis of the first output: of its softmax (logits),
    or of the values themselves when the original's are probabilities already."""
    probs = is_distribution(reference[0])
    lp, lq = _log_dist(reference[0], probs), _log_dist(outputs[0], probs)
    return float(np.mean((np.exp(lp) * (lp - lq)).sum(axis=-1)))


TOKEN_KEYS = ("input_ids", "ids", "tokens")


def perplexity(outputs: Outputs, batch: Batch, reference: Outputs) -> float:
    """Next-token perplexity of a causal LM: the first output is the logits ``[batch, seq,
    vocab]``, the tokens are the input named ``input_ids`` (or ``ids``/``tokens``); positions
    whose token or next token is masked out by ``attention_mask`` do not count (with a key/value
    cache the mask covers the past as well: its last ``seq`` columns are the tokens')."""
    ids = next((batch[k] for k in TOKEN_KEYS if k in batch), None)
    logits = outputs[0]
    if ids is None or logits.ndim != 3 or logits.shape[:2] != ids.shape:
        raise UsageError(f"perplexity needs logits [batch, seq, vocab] and token ids under one of "
                         f"{TOKEN_KEYS} of the same [batch, seq]; got {list(logits.shape)}")
    lp = _log_softmax(logits[:, :-1])
    nxt = ids[:, 1:].astype(np.int64)
    nll = -np.take_along_axis(lp, nxt[..., None], axis=-1)[..., 0]
    mask = batch.get("attention_mask")
    if mask is not None:
        mask = mask[:, mask.shape[1] - ids.shape[1]:]
    keep = np.ones_like(nll, bool) if mask is None else (mask[:, 1:] > 0) & (mask[:, :-1] > 0)
    if not keep.any():
        raise UsageError("perplexity: no unmasked next-token positions in the data")
    return float(np.exp(nll[keep].mean()))


BUILTIN = {
    "perplexity": Metric("perplexity", False, perplexity, builtin=True),
    "psnr": Metric("psnr", True, psnr, builtin=True),
    "mse": Metric("mse", False, mse, builtin=True),
    "accuracy": Metric("accuracy", True, accuracy, needs_labels=True, builtin=True),
    "cosine": Metric("cosine", True, cosine, builtin=True, against_reference=True),
    "kl": Metric("kl", False, kl, builtin=True, against_reference=True),
}


def get_metric(spec: str) -> Metric:
    """A built-in name, or ``module:function`` / ``path/to/file.py:function`` returning a float
    where higher is better. The function is called as ``fn(outputs, batch)``; a function whose
    only parameter is named ``run`` is called as ``fn(run)`` with ``run(feeds) -> outputs``
    running the model being judged, one whose only parameter is ``model`` gets that model as an
    ``onnx.ModelProto`` (for closed-loop metrics such as an episode return)."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    module, sep, func = spec.rpartition(":")
    if not sep or not module or not func:
        raise UsageError(f"--metric {spec!r}: use one of {', '.join(BUILTIN)} or module:function")
    try:
        if module.endswith(".py"):
            loc = importlib.util.spec_from_file_location(Path(module).stem, module)
            if loc is None or loc.loader is None:
                raise ImportError(module)
            mod = importlib.util.module_from_spec(loc)
            loc.loader.exec_module(mod)
        else:
            mod = importlib.import_module(module)
        user = getattr(mod, func)
    except (ImportError, AttributeError, FileNotFoundError, OSError) as err:
        raise UsageError(f"--metric {spec!r}: cannot load it ({err})") from None
    if not callable(user):
        raise UsageError(f"--metric {spec!r}: {func} is not a function")
    try:
        sig = inspect.signature(user)
    except (TypeError, ValueError):  # a builtin without a signature: trust it
        return Metric(spec, True, lambda outputs, batch, reference: user(outputs, batch))
    params = list(sig.parameters)
    if params in (["run"], ["model"]):
        return Metric(spec, True, user, on_model=params[0])
    try:
        sig.bind(None, None)
    except TypeError:
        shown = ", ".join(params) or "nothing"
        raise UsageError(f"--metric {spec!r}: the function must take (outputs, batch), (run) "
                         f"or (model); it takes ({shown})") from None
    return Metric(spec, True, lambda outputs, batch, reference: user(outputs, batch))

