"""Concat and Split: branches keep their own groups, split sizes are rewritten."""

import numpy as np
import pytest
from conftest import group_of_tensor, group_with_layer, groups_summary

from onnxprune.api import prune
from onnxprune.testing import check_oracle
from onnxprune.zoo.builder import GraphBuilder


def _conv(b, x, cin, cout, name):
    return b.relu(b.conv(x, cin, cout, name=name))


def test_concat_keeps_each_branch_its_own_group(gb):
    x = gb.input("x", [1, 3, 8, 8])
    a = _conv(gb, x, 3, 4, "a")
    b = _conv(gb, x, 3, 6, "b")
    c = _conv(gb, x, 3, 5, "c")
    h = gb.op("Concat", [a, b, c], axis=1, name="cat")
    y = gb.conv(h, 15, 2, name="head")
    res = check_oracle(gb.build([y]), trials=5)
    assert groups_summary(res.analysis) == [(2, True), (4, False), (5, False), (6, False)]
    for layer in "abc":
        assert set(group_with_layer(res.analysis, layer).layers) == {layer, "head"}


def test_concat_with_graph_input_freezes_only_that_part(gb):
    x = gb.input("x", [1, 3, 8, 8])
    a = _conv(gb, x, 3, 4, "a")
    h = gb.op("Concat", [x, a], axis=1)
    y = gb.conv(h, 7, 2, name="head")
    res = check_oracle(gb.build([y]), trials=3)
    assert not group_with_layer(res.analysis, "a").frozen


def test_dense_block_concat_chain(gb):
    x = gb.input("x", [1, 3, 8, 8])
    h = _conv(gb, x, 3, 8, "stem")
    for i in range(3):
        new = _conv(gb, h, 8 + 4 * i, 4, f"layer{i}")
        h = gb.op("Concat", [h, new], axis=1, name=f"cat{i}")
    y = gb.conv(h, 20, 2, name="head")
    res = check_oracle(gb.build([y]), trials=5)
    stem = group_with_layer(res.analysis, "stem")
    assert set(stem.layers) == {"stem", "layer0", "layer1", "layer2", "head"}
    assert groups_summary(res.analysis) == [(2, True), (4, False), (4, False), (4, False), (8, False)]


@pytest.mark.parametrize("opset,style", [(11, "attr"), (13, "input"), (18, "num_outputs")])
def test_split_sizes_rewritten(opset, style):
    b = GraphBuilder(opset=opset)
    x = b.input("x", [1, 3, 8, 8])
    h = _conv(b, x, 3, 12, "c1")
    if style == "attr":
        parts = b.op("Split", [h], n_out=2, axis=1, split=[4, 8], name="split")
    elif style == "input":
        parts = b.op("Split", [h, b.const(np.array([4, 8], np.int64))], n_out=2, axis=1,
                     name="split")
    else:
        parts = b.op("Split", [h], n_out=2, axis=1, num_outputs=2, name="split")
    y1 = b.conv(parts[0], parts_size := (4 if style != "num_outputs" else 6), 2, name="h1")
    y2 = b.conv(parts[1], 12 - parts_size, 3, name="h2")
    y = b.op("Add", [b.op("GlobalAveragePool", [y1]), b.op("ReduceMean", [y2], axes=[1, 2, 3],
                                                           keepdims=1)
                     if opset < 18 else b.op("ReduceMean", [y2, b.const(np.array([1, 2, 3]))],
                                             keepdims=1)])
    res = check_oracle(b.build([y]), trials=5)
    first, second = (group_of_tensor(res.analysis, p) for p in parts)
    assert first is not second and not first.frozen and not second.frozen
    assert first.channels == parts_size
    r = prune(b.build([y]), ratio=0.5)
    assert r.verification.passed


def test_split_then_add_joins_the_halves(gb):
    x = gb.input("x", [1, 3, 8, 8])
    h = _conv(gb, x, 3, 8, "c1")
    p0, p1 = gb.op("Split", [h, gb.const(np.array([4, 4], np.int64))], n_out=2, axis=1)
    y = gb.conv(gb.op("Add", [p0, p1]), 4, 2, name="head")
    res = check_oracle(gb.build([y]), trials=4)
    g = group_with_layer(res.analysis, "c1")
    assert g.channels == 4  # channel i and i+4 of c1 are one unit

