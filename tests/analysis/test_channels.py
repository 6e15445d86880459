"""The channel analysis itself: unknown ops, graph outputs, shared weights and excluded nodes freeze with reasons."""

from conftest import group_with_layer

from onnxprune.testing import check_oracle


def test_unknown_op_freezes_with_reason(gb):
    x = gb.input("x", [1, 3, 8, 8])
    h = gb.conv(x, 3, 8, name="c1")
    h = gb.op("LRN", [h], size=3, name="lrn")  # normalizes across channels
    y = gb.conv(h, 8, 2)
    res = check_oracle(gb.build([y]), trials=1)
    g = group_with_layer(res.analysis, "c1")
    assert g.frozen and g.reason == "LRN lrn: no channel rule for op LRN"


def test_graph_output_freezes(gb):
    x = gb.input("x", [1, 3, 8, 8])
    h = gb.relu(gb.conv(x, 3, 8, name="c1"))
    y = gb.conv(h, 8, 2, name="c2")
    res = check_oracle(gb.build([y, h]), trials=1)
    g = group_with_layer(res.analysis, "c1")
    assert g.frozen and g.reason.startswith("reaches graph output")


def test_shared_weight_couples_its_users(gb):
    x = gb.input("x", [1, 4, 8, 8])
    w = gb.weight(4, 4, 3, 3)
    a = gb.op("Conv", [x, w], pads=[1] * 4, name="shared_a")
    b2 = gb.op("Conv", [gb.relu(a), w], pads=[1] * 4, name="shared_b")
    y = gb.conv(gb.relu(b2), 4, 2, name="head")
    res = check_oracle(gb.build([y]), trials=3)
    g = group_with_layer(res.analysis, "shared_a")
    # a's outputs are b's inputs and both use the same weight: rows == columns -> one group
    assert "shared_b" in g.layers
    assert g.frozen  # the input x's channels (graph input) share the weight's columns


def test_exclude_glob_leaves_node_untouched(gb):
    x = gb.input("x", [1, 3, 8, 8])
    h = gb.relu(gb.conv(x, 3, 8, name="keep_me"))
    h = gb.relu(gb.conv(h, 8, 8, name="c2"))
    y = gb.conv(h, 8, 2, name="c3")
    res = check_oracle(gb.build([y]), trials=2, exclude=["keep*"])
    g = group_with_layer(res.analysis, "keep_me")
    assert g.frozen and "excluded" in g.reason
    assert not next(g for g in res.analysis.groups if "c2" in g.layers and "c3" in g.layers).frozen

