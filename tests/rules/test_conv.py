"""Conv and ConvTranspose rules: chains, depthwise and grouped convolutions, against the oracle."""

import pytest
from conftest import cbr, group_of_tensor, group_with_layer, groups_summary

from onnxprune.testing import check_oracle


def test_conv_chain_groups_and_oracle(gb):
    x = gb.input("x", [2, 3, 16, 16])
    h = cbr(gb, x, 3, 8, name="c1")
    h = cbr(gb, h, 8, 12, name="c2")
    y = gb.conv(h, 12, 4, name="c3")
    res = check_oracle(gb.build([y]), trials=4)
    assert groups_summary(res.analysis) == [(4, True), (8, False), (12, False)]
    g = group_with_layer(res.analysis, "c1")
    assert set(g.layers) == {"c1", "c2"}
    # c1 out (8 x 3 x 3 x 3 + 8 bias) and c2 in (12 x 8 x 3 x 3)
    assert g.n_params == 8 * 27 + 8 + 12 * 8 * 9


@pytest.mark.parametrize("mult", [1, 2])
def test_depthwise_conv_follows_its_input(gb, mult):
    x = gb.input("x", [1, 3, 8, 8])
    h = cbr(gb, x, 3, 6, name="pw")
    h = cbr(gb, h, 6, 6 * mult, group=6, name="dw")
    y = gb.conv(h, 6 * mult, 5, k=1, name="out")
    res = check_oracle(gb.build([y]), trials=4)
    g = group_with_layer(res.analysis, "pw")
    assert g.channels == 6 and set(g.layers) == {"pw", "dw", "out"}
    dw_out = next(m for m in g.members if m.tensor.startswith("dw"))
    assert dw_out.size == 6 * mult


def test_grouped_conv_prunes_equal_counts_per_group(gb):
    x = gb.input("x", [1, 3, 8, 8])
    h = cbr(gb, x, 3, 16, name="a")
    h = cbr(gb, h, 16, 32, group=4, name="grouped")
    y = gb.conv(h, 32, 5, k=1, name="out")
    res = check_oracle(gb.build([y]), trials=5)
    g = group_with_layer(res.analysis, "a")
    assert g.channels == 4  # channel j of each of the 4 groups is one unit
    assert set(g.layers) == {"a", "grouped"}
    out = group_of_tensor(res.analysis, "grouped_out0")
    assert out.channels == 8 and set(out.layers) == {"grouped", "out"}


def test_grouped_conv_keeps_its_group_count(gb):
    from onnxprune.api import prune

    x = gb.input("x", [1, 3, 8, 8])
    h = cbr(gb, x, 3, 16, name="a")
    h = cbr(gb, h, 16, 32, group=4, name="grouped")
    y = gb.conv(h, 32, 5, k=1, name="out")
    r = prune(gb.build([y]), ratio=0.5)
    node = next(n for n in r.model.graph.node if n.name == "grouped")
    assert next(a.i for a in node.attribute if a.name == "group") == 4
    weight = next(i for i in r.model.graph.initializer if i.name == node.input[1])
    assert list(weight.dims) == [16, 2, 3, 3]  # 4 groups x 4 outputs, 2 inputs per group
    assert r.verification.passed


@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose(gb, group):
    x = gb.input("x", [1, 4, 7, 7])
    h = cbr(gb, x, 4, 8, name="enc")
    h = gb.relu(gb.conv_transpose(h, 8, 6, group=group, name="up"))
    y = gb.conv(h, 6, 2, name="out")
    res = check_oracle(gb.build([y]), trials=4)
    up = group_with_layer(res.analysis, "out")
    assert "up" in up.layers
    assert up.channels == (6 if group == 1 else 3)  # grouped: output j of both groups
    if group == 2:  # input j of both groups of 4 is one unit
        assert group_with_layer(res.analysis, "enc").channels == 4

