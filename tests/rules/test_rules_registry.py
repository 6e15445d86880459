"""The op-rule registry: every rule carries all of an op's knowledge (propagation, MACs, the
oracle's statistics gates, the torch lowering) or says why a hook does not apply."""

import numpy as np
import pytest

from onnxprune.analysis.size import graph_macs
from onnxprune.ir.graph import import_model, infer_shapes
from onnxprune.rules import default_registry
from onnxprune.rules.base import OpRule
from onnxprune.zoo.builder import GraphBuilder

RULES = {type(r).__name__: r for r in default_registry().rules()}


def _overrides(rule: OpRule, hook: str) -> bool:
    return getattr(type(rule), hook) is not getattr(OpRule, hook)


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_counts_macs_or_says_why(name):
    rule = RULES[name]
    assert _overrides(rule, "macs") == (rule.no_macs is None), name
    assert rule.no_macs is None or rule.no_macs.strip()


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_views_its_weight_as_a_matrix_or_says_why(name):
    rule = RULES[name]
    assert _overrides(rule, "layer") == (rule.no_layer is None), name
    assert rule.no_layer is None or rule.no_layer.strip()


@pytest.mark.parametrize("name", sorted(RULES))
def test_statistics_gates_come_with_their_rebuild(name):
    rule = RULES[name]
    assert _overrides(rule, "stats_gate") == rule.gates_stats, name


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_op_has_a_torch_lowering_or_a_reason(name):
    pytest.importorskip("torch")
    from onnxprune.recover.ops import OPS

    rule = RULES[name]
    for op in rule.ops:
        reason = rule.no_lowering.get(op)
        assert op in OPS or (reason and reason.strip()), f"{name}: {op} has no torch lowering"
        assert not (op in OPS and reason), f"{name}: {op} is lowered but says it is not"


def _macs(build, inputs):
    b = GraphBuilder(seed=0)
    xs = [b.input(n, s) for n, s in inputs]
    model = b.build([build(b, *xs)], "m")
    return graph_macs(infer_shapes(import_model(model)))


def test_einsum_and_recurrent_layers_count_their_macs():
    w = np.ones((6, 5), np.float32)
    # a linear layer as einsum: batch 1 (symbolic) x 7 tokens x 6 in x 5 out
    assert _macs(lambda b, x: b.op("Einsum", [x, b.const(w)], equation="bld,df->blf"),
                 [("x", ["batch", 7, 6])]) == 7 * 6 * 5
    # attention scores as einsum of two activations: heads 2, 7 x 7 positions, dim 4
    assert _macs(lambda b, q, k: b.op("Einsum", [q, k], equation="bhqd,bhkd->bhqk"),
                 [("q", ["batch", 2, 7, 4]), ("k", ["batch", 2, 7, 4])]) == 2 * 7 * 7 * 4
    hidden, inp, steps = 8, 5, 9
    for op, gates in (("RNN", 1), ("GRU", 3), ("LSTM", 4)):
        wx = np.zeros((1, gates * hidden, inp), np.float32)
        wr = np.zeros((1, gates * hidden, hidden), np.float32)

        def build(b, x, op=op, wx=wx, wr=wr):
            return b.op(op, [x, b.const(wx), b.const(wr)], hidden_size=hidden, n_out=1)

        assert _macs(build, [("x", [steps, "batch", inp])]) == \
            steps * gates * hidden * (inp + hidden), op
