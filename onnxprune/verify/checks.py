"""Verification: the checker, an onnxruntime session per provider, and the mask oracle."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from ..analysis.model import ChannelAnalysis
from ..ir.arrays import Calibration
from ..ir.runtime import random_feeds, session, weightless
from ..ir.weights import Skeleton, proto
from .compare import ATOL, RTOL, OutputCheck, check_outputs, close, max_diffs, output_noise
from .oracle import Oracle


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
    shapes: tuple[dict[str, list[int]], ...] = ()  # the input shapes of every verification run
    deciding: str | None = None  # the output closest to its tolerance, and that tolerance


RUNTIME_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"}


def custom_domains(model: onnx.ModelProto) -> list[str]:
    """Op domains the model uses that onnxruntime does not implement."""
    used = {n.domain for n in model.graph.node}
    return sorted(used - RUNTIME_DOMAINS)


def available_providers(requested: Sequence[str]) -> list[str]:
    have = set(ort.get_available_providers())
    return [p for p in requested if p in have]


GATE_NOISE = 2.0 ** -20  # relative perturbation of the open gates that measures float noise


def verify_pruned(
    pruned: onnx.ModelProto | Skeleton,
    reference: onnx.ModelProto | Skeleton,
    analysis: ChannelAnalysis,
    removed: np.ndarray,
    *,
    source: onnx.ModelProto | Skeleton | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    seed: int = 0,
    rtol: float = RTOL,
    atol: float = ATOL,
    shapes: dict[str, Sequence[int]] | None = None,
    feed_sets: Sequence[dict[str, np.ndarray]] | None = None,
    keep_reference: bool = True,
    normalize_diff: float | None = None,
    oracle: Oracle | None = None,
) -> VerifyReport:
    """Checker, every provider and the mask oracle on each set of inputs (``feed_sets``;
    default: random inputs at ``shapes``). ``keep_reference=False`` lets the oracle reuse
    ``reference`` (saves a copy of the weights); ``normalize_diff`` is reported when the input
    model was compared earlier. ``oracle``: the gated reference a search of this run built
    already (built here otherwise)."""
    messages: list[str] = []
    try:
        onnx.checker.check_model(weightless(pruned), full_check=True)
        checker = True
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        checker = False
        messages.append(f"onnx.checker: {str(err).splitlines()[0]}")
    custom = custom_domains(proto(pruned))
    if custom:
        # onnxruntime cannot run these ops: the checker is all that can be done, and the
        # channels around custom ops were frozen by the analysis.
        messages.append("onnxruntime run and mask oracle skipped: custom op domain(s) "
                        + ", ".join(custom))
        return VerifyReport(checker, (), float("nan"), float("nan"), None, checker,
                            tuple(messages), oracle=False)
    sets = list(feed_sets) if feed_sets else [random_feeds(reference, seed=seed, shapes=shapes)]
    names = [o.name for o in proto(pruned).graph.output]
    # inputs the pruned model no longer has (a cache pair that left with its block)
    takes = {i.name for i in proto(pruned).graph.input}
    # an opened cache: the pruned model reads and writes only the kept heads
    cuts = analysis.interface_cuts([*names, *(i.name for i in proto(reference).graph.input)],
                                   removed)
    keep = (~removed).astype(np.float32)
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], keep.size).astype(np.float32)
    noisy = keep * (1 + GATE_NOISE * signs)
    ran: set[str] = set()
    worst: dict[str, OutputCheck] = {}
    abs_diff = rel_diff = 0.0
    norm_diff = normalize_diff
    own = oracle is None
    noise = None  # measured only when an output needs more than the plain tolerance
    sessions = {}
    for feeds in sets:
        outputs = None
        for provider in providers:
            try:
                sess = sessions.get(provider) or sessions.setdefault(
                    provider, session(pruned, [provider]))
                outputs = sess.run(None, {k: v for k, v in cut_arrays(feeds, cuts).items()
                                          if k in takes})
                ran.add(provider)
            except Exception as err:  # noqa: BLE001 - any runtime failure fails verification
                messages.append(f"onnxruntime {provider} at {_shape_text(feeds)}: "
                                f"{str(err).splitlines()[0]}")
        if outputs is None:
            abs_diff = rel_diff = float("inf")
            continue
        if oracle is None:
            oracle = Oracle(reference, analysis, inplace=not keep_reference)
        expected = cut_outputs(_named(oracle, oracle.run(feeds, keep), names), names, cuts)
        checks = check_outputs(outputs, expected, names, noise, rtol, atol)
        if noise is None and not all(c.passed for c in checks):
            # an output beyond the plain tolerance: measure its float noise (once, here)
            noise = output_noise(expected, cut_outputs(_named(oracle, oracle.run(feeds, noisy),
                                                             names), names, cuts))
            checks = check_outputs(outputs, expected, names, noise, rtol, atol)
        for c in checks:
            if c.name not in worst or c.margin > worst[c.name].margin:
                worst[c.name] = c
        a, r = max_diffs(outputs, expected)
        abs_diff, rel_diff = max(abs_diff, a), max(rel_diff, r)
        if source is not None and feeds is sets[0]:
            norm_diff = _compare_source(source, oracle, feeds, messages)
    if own:
        del oracle  # one large session alive at a time
    failed = [c for c in worst.values() if not c.passed]
    for c in failed:
        messages.append(f"mask oracle mismatch: {c.describe()}")
    deciding = max(worst.values(), key=lambda c: c.margin) if worst else None
    passed = checker and ran == set(providers) and bool(worst) and not failed and not any(
        m.startswith("normalized graph differs") for m in messages)
    return VerifyReport(checker, tuple(p for p in providers if p in ran), abs_diff, rel_diff,
                        norm_diff, passed, tuple(messages),
                        shapes=tuple(_shapes_of(f) for f in sets),
                        deciding=deciding.describe() if deciding else None)


def _named(oracle: Oracle, outputs: list[np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
    """The oracle's outputs the pruned model has, in its order (an output can leave with a
    removed block: a key/value cache)."""
    if list(oracle.output_names) == list(names):
        return outputs
    by_name = dict(zip(oracle.output_names, outputs, strict=True))
    return [by_name[n] for n in names]


def cut_arrays(arrays: dict[str, np.ndarray], cuts: dict) -> dict[str, np.ndarray]:
    """``arrays`` with the channels an interface lost left out (``interface_cuts``)."""
    if not cuts:
        return arrays
    out = dict(arrays)
    for name, axes in cuts.items():
        if name in out:
            for axis, keep in axes:
                out[name] = np.compress(keep, out[name], axis=axis)
    return Calibration(out, arrays.axes) if isinstance(arrays, Calibration) else out


def cut_outputs(outputs: list[np.ndarray], names: Sequence[str], cuts: dict,
                of: Sequence[str] | None = None) -> list[np.ndarray]:
    """The original's ``outputs`` as the pruned model gives them: ``names`` (its outputs, in its
    order; ``of``: the names of ``outputs`` when some left with a block, a key/value cache) with
    the channels an opened cache lost left out."""
    by_name = dict(zip(names if of is None else of, outputs, strict=True))
    cut = cut_arrays({n: by_name[n] for n in names}, cuts)
    return [cut[n] for n in names]


def _compare_source(source: onnx.ModelProto | Skeleton, oracle: Oracle, feeds: dict,
                    messages: list[str]) -> float | None:
    """The normalized graph (the oracle with every gate open is bit-exact to it) against the
    input model."""
    try:
        want = session(source).run(None, feeds)
    except Exception as err:  # noqa: BLE001 - e.g. custom ops onnxruntime cannot run
        messages.append(f"input model not compared: {str(err).splitlines()[0]}")
        return None
    got = oracle.run(feeds)
    diff = max_diffs(got, want)[1]
    if not close(got, want, rtol=1e-3, atol=1e-4):
        messages.append(f"normalized graph differs from the input model ({diff:.3g})")
    return diff


def _shapes_of(feeds: dict[str, np.ndarray]) -> dict[str, list[int]]:
    return {k: list(np.shape(v)) for k, v in feeds.items()}


def _shape_text(feeds: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k}={'x'.join(map(str, np.shape(v))) or 'scalar'}" for k, v in feeds.items())
