"""Verification: the checker, an onnxruntime session per provider, and the mask oracle."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from ..analysis.model import ChannelAnalysis
from ..ir.runtime import random_feeds, session
from .oracle import Oracle

RTOL, ATOL = 1e-4, 1e-5

@dataclass(frozen=True)
class VerifyReport:
    checker: bool
    providers: tuple[str, ...]
    max_abs_diff: float  # pruned vs gated reference, worst output element
    max_rel_diff: float  # the same, relative to the largest reference magnitude
    normalize_rel_diff: float | None  # normalized vs input model (None: not compared)
    passed: bool
    messages: tuple[str, ...]
    oracle: bool = True  # False when the oracle could not run (custom ops)


RUNTIME_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"}


def custom_domains(model: onnx.ModelProto) -> list[str]:
    """Op domains the model uses that onnxruntime does not implement."""
    used = {n.domain for n in model.graph.node}
    return sorted(used - RUNTIME_DOMAINS)


def available_providers(requested: Sequence[str]) -> list[str]:
    have = set(ort.get_available_providers())
    return [p for p in requested if p in have]


def max_diffs(got: list[np.ndarray], want: list[np.ndarray]) -> tuple[float, float]:
    abs_diff, scale = 0.0, 0.0
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape:
            return float("inf"), float("inf")
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        abs_diff = max(abs_diff, float(np.max(np.abs(g64 - w64), initial=0.0)))
        scale = max(scale, float(np.max(np.abs(w64), initial=0.0)))
    return abs_diff, abs_diff / max(scale, 1e-12)


def close(got: list[np.ndarray], want: list[np.ndarray], rtol: float = RTOL, atol: float = ATOL) -> bool:
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape:
            return False
        scale = max(1.0, float(np.max(np.abs(w.astype(np.float64)), initial=0.0)))
        if not np.allclose(g, w, rtol=rtol, atol=atol * scale, equal_nan=False):
            return False
    return True


def verify_pruned(
    pruned: onnx.ModelProto,
    reference: onnx.ModelProto,
    analysis: ChannelAnalysis,
    removed: np.ndarray,
    *,
    source: onnx.ModelProto | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    seed: int = 0,
    rtol: float = RTOL,
    atol: float = ATOL,
    shapes: dict[str, Sequence[int]] | None = None,
    keep_reference: bool = True,
    normalize_diff: float | None = None,
) -> VerifyReport:
    """``keep_reference=False`` lets the oracle reuse ``reference`` (saves a copy of the
    weights); ``normalize_diff`` is reported when the input model was compared earlier."""
    messages: list[str] = []
    try:
        onnx.checker.check_model(pruned, full_check=True)
        checker = True
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        checker = False
        messages.append(f"onnx.checker: {str(err).splitlines()[0]}")
    custom = custom_domains(pruned)
    if custom:
        # onnxruntime cannot run these ops: the checker is all that can be done, and the
        # channels around custom ops were frozen by the analysis.
        messages.append("onnxruntime run and mask oracle skipped: custom op domain(s) "
                        + ", ".join(custom))
        return VerifyReport(checker, (), float("nan"), float("nan"), None, checker,
                            tuple(messages), oracle=False)
    feeds = random_feeds(reference, seed=seed, shapes=shapes)
    ran = []
    outputs = None
    for provider in providers:
        try:
            outputs = session(pruned, [provider]).run(None, feeds)
            ran.append(provider)
        except Exception as err:  # noqa: BLE001 - any runtime failure fails verification
            messages.append(f"onnxruntime {provider}: {str(err).splitlines()[0]}")
    abs_diff = rel_diff = float("inf")
    oracle_ok = False
    ones = None
    if outputs is not None:
        oracle = Oracle(reference, analysis, inplace=not keep_reference)
        expected = oracle.run(feeds, ~removed)
        # the reference's own outputs: the oracle with every gate open (bit-exact)
        ones = oracle.run(feeds) if source is not None else None
        del oracle  # one large session alive at a time
        abs_diff, rel_diff = max_diffs(outputs, expected)
        oracle_ok = close(outputs, expected, rtol, atol)
        if not oracle_ok:
            messages.append(f"mask oracle mismatch: max abs diff {abs_diff:.3g}")
    norm_diff = normalize_diff
    if source is not None:
        try:
            want = session(source).run(None, feeds)
            got = ones if ones is not None else session(reference).run(None, feeds)
            norm_diff = max_diffs(got, want)[1]
            if not close(got, want, rtol=1e-3, atol=1e-4):
                messages.append(f"normalized graph differs from the input model ({norm_diff:.3g})")
        except Exception as err:  # noqa: BLE001 - e.g. custom ops onnxruntime cannot run
            messages.append(f"input model not compared: {str(err).splitlines()[0]}")
    passed = checker and len(ran) == len(providers) and oracle_ok and not any(
        m.startswith("normalized graph differs") for m in messages
    )
    return VerifyReport(checker, tuple(ran), abs_diff, rel_diff, norm_diff, passed, tuple(messages))
