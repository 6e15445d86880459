"""Recurrent rules (RNN, GRU, LSTM as ONNX writes them): a hidden unit is a block of rows in
W, R and B per gate and a column of R; the input channels are gated on X; a non-zero initial
state or sequence lengths freeze. Graphs built in code (no torch)."""

import numpy as np
import pytest

from onnxprune.api import prune
from onnxprune.testing import check_oracle
from onnxprune.zoo.builder import GraphBuilder

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
T, B, IN, H = 5, 2, 6, 8


def recurrent(op: str, init: str | None = None, peepholes: bool = False):
    """X -> MatMul (I channels) -> op (H units) -> Y_h -> MatMul (3 outputs)."""
    rng = np.random.default_rng(0)
    g = GATES[op]
    b = GraphBuilder(seed=0, opset=14)
    x = b.matmul(b.input("x", [T, B, 4]), 4, IN, name="proj")
    ins = [x, b.const(rng.normal(0, 0.3, (1, g * H, IN)).astype(np.float32)),
           b.const(rng.normal(0, 0.3, (1, g * H, H)).astype(np.float32)),
           b.const(rng.normal(0, 0.1, (1, 2 * g * H)).astype(np.float32))]
    if init is not None:  # sequence_lens absent, initial_h (and LSTM's initial_c)
        value = np.zeros((1, B, H), np.float32) if init == "zero" else np.full(
            (1, B, H), 0.5, np.float32)
        ins += ["", b.const(value)] + ([b.const(value)] if op == "LSTM" else [])
    if peepholes:  # LSTM's P: three per unit
        ins += [b.const(rng.normal(0, 0.1, (1, 3 * H)).astype(np.float32))]
    outs = b.op(op, ins, n_out=2, hidden_size=H, name="rnn")
    h = b.op("Squeeze", [outs[1], b.const(np.array([0], np.int64))])
    return b.build([b.matmul(h, H, 3, name="head")])


def group(analysis, channels: int):
    return next(g for g in analysis.groups if "rnn" in g.layers and g.channels == channels)


@pytest.mark.parametrize("op", sorted(GATES))
def test_hidden_units_and_input_channels_prune_as_the_oracle_says(op):
    res = check_oracle(recurrent(op), trials=4)
    units, inputs = group(res.analysis, H), group(res.analysis, IN)
    assert not units.frozen and "head" in units.layers
    assert not inputs.frozen and "proj" in inputs.layers
    r = prune(recurrent(op), ratio=0.5)
    assert r.verification.passed
    rnn = next(n for n in r.model.graph.node if n.op_type == op)
    assert next(a.i for a in rnn.attribute if a.name == "hidden_size") == H // 2


def test_a_zero_initial_state_goes_and_peepholes_are_sliced_with_the_units():
    res = check_oracle(recurrent("LSTM", init="zero", peepholes=True), trials=4)
    assert not group(res.analysis, H).frozen


def test_a_non_zero_initial_state_freezes_with_the_reason():
    res = check_oracle(recurrent("GRU", init="half"), trials=1)
    assert all(g.frozen and "initial state is not a constant zero" in g.reason
               for g in res.analysis.groups if "rnn" in g.layers)
