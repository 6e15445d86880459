"""Property-based fuzzing of the compiler: random valid models (tests/graphgen.py) must prune
to exactly what the mask oracle says, and the public ``prune`` must verify.

Profiles (registered here and applied per test, so no other suite's settings change):

- ``fast``: 40 examples per property; the two property tests always use it and are part of
  the default run (a few seconds to a few tens of seconds).
- ``soak``: thousands of examples (about ten minutes on a 2-core machine) for ``test_soak``,
  which is marked slow and runs the profile ``ONNXPRUNE_FUZZ`` names (default ``fast``):
  ``ONNXPRUNE_FUZZ=soak python -m pytest tests/test_fuzz.py -m slow -q``.

A failure prints the generator's step log and the graph (``graphgen.describe``) and a
``@reproduce_failure`` blob; reduce it to a hand-written graph in test_fuzz_regressions.py.
Known bugs are listed in ``KNOWN_BUGS`` below.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import numpy as np
import onnx
import pytest
from graphgen import describe, graphs
from hypothesis import HealthCheck, event, given, note, reject, settings
from hypothesis import strategies as st
from test_fuzz_regressions import keep_one_per_group

from onnxprune.analysis.channels import analyze_channels
from onnxprune.api import analyze, prune
from onnxprune.ir.graph import import_model
from onnxprune.testing import check_oracle, normalized

_COMMON = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
    print_blob=True,
)
settings.register_profile("fast", max_examples=40, **_COMMON)
settings.register_profile("soak", max_examples=3000, **_COMMON)
PROFILE = os.environ.get("ONNXPRUNE_FUZZ", "fast")
if PROFILE not in ("fast", "soak"):
    raise ValueError(f"ONNXPRUNE_FUZZ must be 'fast' or 'soak', not {PROFILE!r}")

seeds = st.integers(0, 2**16)
ratios = st.one_of(st.just(0.9), st.floats(0.0, 0.9, allow_nan=False))
MIXERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


# -- structural expectations ------------------------------------------------------------
def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def _simple_chains(model: onnx.ModelProto) -> list[tuple[str, int, str, int]]:
    """(tensor, axis, producer, channels) where a group-1 layer feeds exactly one other layer
    of the same family directly (Conv/ConvTranspose -> Conv/ConvTranspose on the channel axis,
    Gemm/MatMul -> Gemm/MatMul on the feature axis), both with private weights and the tensor
    not a graph output. Such channels must form one prunable group of exactly that width."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    outputs = {o.name for o in g.output}
    ranks = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in g.value_info
             if vi.type.tensor_type.HasField("shape")}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for name in node.input:
            users.setdefault(name, []).append(node)

    def family(node: onnx.NodeProto) -> str | None:
        params = [n for n in node.input[1:] if n]
        if not all(p in inits and len(users[p]) == 1 for p in params):
            return None  # a shared or computed weight
        if node.op_type in ("Conv", "ConvTranspose"):
            plain = _attr(node, "group", 1) == 1 and not any(
                a.name == "output_shape" for a in node.attribute)
            return "conv" if plain else None
        if node.op_type == "Gemm":
            return "linear" if not _attr(node, "transA", 0) else None
        if node.op_type == "MatMul" and len(inits[node.input[1]].dims) == 2:
            return "linear"
        return None

    chains = []
    for node in g.node:
        kind = family(node)
        out = node.output[0]
        consumers = users.get(out, [])
        if kind is None or out in outputs or len(consumers) != 1:
            continue
        nxt = consumers[0]
        if family(nxt) != kind or list(nxt.input).index(out) != 0:
            continue
        w = inits[node.input[1]]
        if node.op_type == "Conv":
            width, axis = w.dims[0], 1
        elif node.op_type == "ConvTranspose":
            width, axis = w.dims[1], 1
        elif node.op_type == "Gemm":
            width, axis = (w.dims[0] if _attr(node, "transB", 0) else w.dims[1]), 1
        elif out in ranks:
            width, axis = w.dims[1], ranks[out] - 1
        else:
            continue
        if nxt.op_type == "Gemm" and axis != 1:
            continue
        chains.append((out, axis, node.name, width))
    return chains


def assert_structure(model: onnx.ModelProto, analysis) -> None:
    norm = normalized(model)
    if any(n.op_type in MIXERS for n in norm.graph.node):
        assert analysis.groups, "a model with a channel-creating layer has no channel group"
    tensors = import_model(norm).tensors()
    for (param, axis), units in analysis.params.items():
        size = tensors[param].values.shape[axis]
        assert units.size == size, f"{param} axis {axis}: {units.size} units for {size} slices"
    for tensor, axis, producer, width in _simple_chains(norm):
        group = next((g for g in analysis.groups
                      if any((m.tensor, m.axis) == (tensor, axis) for m in g.members)), None)
        assert group is not None, f"{tensor} (out of {producer}) is in no group"
        assert not group.frozen and group.frozen_units == 0, \
            f"{tensor} (out of {producer}) feeds one layer but is frozen: {group.reason}"
        assert group.channels == width, f"{tensor}: group of {group.channels}, expected {width}"


# -- known bugs ------------------------------------------------------------------------------
# A known, unfixed bug gets a minimal repro marked xfail(strict=True) in
# test_fuzz_regressions.py and an entry here: regression test name -> predicate on the
# normalized model and its analysis that shows the bug's trigger. An example that fails *and*
# shows a known trigger is rejected (hypothesis draws another), so the fast profile stays green
# while the fix is pending; an example failing any other way is a new bug. Remove the entry with
# the fix. The fuzzer's first three bugs (no channel units; one channel broadcast up; Squeeze
# without axes) were fixed in f902458, so the table is empty; the predicates used for them
# were ``analysis.num_units == 0`` and a parameter claim whose unit count differs from the
# sliced axis.
KNOWN_BUGS: dict[str, Callable[[onnx.ModelProto, object], bool]] = {}


def known_bug(model: onnx.ModelProto) -> str | None:
    """The regression test of a known bug this model triggers, if any."""
    if not KNOWN_BUGS:
        return None
    try:
        norm = normalized(model)
        analysis = analyze_channels(import_model(norm))
    except Exception:  # noqa: BLE001 - the analysis itself failing is not a known bug
        return None
    return next((name for name, shows in KNOWN_BUGS.items() if shows(norm, analysis)), None)


def reject_known_bugs(prop):
    """Run ``prop``; if it fails on a model showing a known bug, reject the example instead."""
    @functools.wraps(prop)
    def run(model, arg):
        try:
            prop(model, arg)
        except Exception as err:
            bug = known_bug(model)
            if bug is None:
                raise
            event(f"rejected: known bug {bug} ({type(err).__name__})")
            reject()
    return run


# -- the properties ----------------------------------------------------------------------
@reject_known_bugs
def oracle_property(model: onnx.ModelProto, seed: int) -> None:
    """Random removals (check_oracle) and the narrowest one, every group down to one channel
    (where shape-dependent semantics such as broadcasting or squeezing change), must equal
    the mask oracle."""
    note(describe(model))
    result = check_oracle(model, seed=seed, trials=2)
    assert_structure(model, result.analysis)
    assert np.isfinite(result.max_abs_diff)
    if result.analysis.prunable_groups():
        keep_one_per_group(model, require=False)


@reject_known_bugs
def prune_property(model: onnx.ModelProto, ratio: float) -> None:
    note(describe(model))
    result = prune(model, ratio=ratio)
    assert result.verification is not None and result.verification.passed, \
        result.verification and result.verification.messages
    assert result.params_after <= result.params_before
    if ratio == 0.0:
        assert result.params_after == result.params_before


@reject_known_bugs
def depth_property(model: onnx.ModelProto, draw) -> None:
    """Removing random residual blocks (and channels) verifies against the oracle's block
    gates, and removes each block's nodes."""
    note(describe(model))
    removable = [b for b in analyze(model).blocks if b.removable]
    event(f"removable blocks: {min(len(removable), 3)}{'+' if len(removable) > 3 else ''}")
    if not removable:
        return
    k = draw(st.integers(1, len(removable)))
    ratio = draw(st.sampled_from([0.0, 0.3]))
    result = prune(model, ratio=ratio, remove_blocks=k)
    assert result.verification.passed, result.verification.messages
    assert len(result.depth["removed"]) == k
    adds = {n.name for n in result.model.graph.node if n.op_type == "Add"}
    assert not adds & {b["name"] for b in result.depth["removed"]}  # (an output: an Identity)
    assert result.params_after <= result.params_before


@settings(settings.get_profile("fast"))
@given(graphs(prefer=("block",)), st.data())
def test_removing_random_blocks_equals_the_oracle(model, data):
    depth_property(model, data.draw)


@settings(settings.get_profile("fast"))
@given(graphs(), seeds)
def test_pruned_model_equals_mask_oracle(model, seed):
    oracle_property(model, seed)


@settings(settings.get_profile("fast"))
@given(graphs(), ratios)
def test_prune_api_verifies_and_never_grows(model, ratio):
    prune_property(model, ratio)


@pytest.mark.slow
@settings(settings.get_profile(PROFILE))
@given(graphs(max_steps=14), seeds, ratios)
def test_soak(model, seed, ratio):
    """Both properties on the same model, ``ONNXPRUNE_FUZZ`` examples (soak: thousands)."""
    oracle_property(model, seed)
    prune_property(model, ratio)
