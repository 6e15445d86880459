"""Op rules that move, cut or assemble channels: Concat, Split, Slice, Reshape, Flatten,
Transpose, Squeeze/Unsqueeze, Pad, Resize/Upsample, Gather."""

import numpy as np
import onnx
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


@pytest.mark.parametrize("opset", [9, 13])
def test_slice_on_channels(opset):
    b = GraphBuilder(opset=opset)
    x = b.input("x", [1, 3, 8, 8])
    h = _conv(b, x, 3, 12, "c1")
    if opset < 10:
        s = b.op("Slice", [h], starts=[2], ends=[9], axes=[1], name="sl")
    else:
        s = b.op("Slice", [h, b.const(np.array([2])), b.const(np.array([9])),
                           b.const(np.array([1]))], name="sl")
    y = b.conv(s, 7, 2, name="head")
    res = check_oracle(b.build([y, b.conv(h, 12, 3)]), trials=5)
    inside = group_of_tensor(res.analysis, "sl_out0")
    assert inside.channels == 7 and not inside.frozen
    outside = [g for g in res.analysis.groups if "c1" in g.layers and g is not inside]
    assert [g.channels for g in outside] == [5]  # channels 0-1 and 9-11 share one signature


def test_strided_slice_on_channels_freezes(gb):
    x = gb.input("x", [1, 3, 8, 8])
    h = _conv(gb, x, 3, 12, "c1")
    s = gb.op("Slice", [h, gb.const(np.array([0])), gb.const(np.array([12])),
                        gb.const(np.array([1])), gb.const(np.array([2]))], name="sl")
    y = gb.conv(s, 6, 2, name="head")
    res = check_oracle(gb.build([y]), trials=1)
    assert group_with_layer(res.analysis, "c1").frozen


@pytest.mark.parametrize("how", ["flatten", "reshape", "reshape_minus1"])
def test_flatten_spreads_channels_into_features(gb, how):
    x = gb.input("x", [2, 3, 8, 8])
    h = gb.op("MaxPool", [_conv(gb, x, 3, 6, "c1")], kernel_shape=[2, 2], strides=[2, 2])
    if how == "flatten":
        h = gb.op("Flatten", [h])
    else:
        h = gb.reshape(h, [2, 96] if how == "reshape" else [0, -1])
    y = gb.gemm(h, 96, 3, name="fc")
    res = check_oracle(gb.build([y]), trials=4)
    g = group_with_layer(res.analysis, "c1")
    assert g.channels == 6 and "fc" in g.layers
    fc_in = next(p for p in g.params if p.size == 96)
    assert fc_in.count == 96


def test_unflatten_joins_linear_features_into_channels(gb):
    z = gb.input("z", ["batch", 8])
    h = gb.relu(gb.gemm(z, 8, 16 * 9, name="fc"))
    h = gb.reshape(h, [-1, 16, 3, 3])
    h = gb.relu(gb.conv_transpose(h, 16, 4, name="up"))
    y = gb.conv(h, 4, 1, name="out")
    model = gb.build([y])
    res = check_oracle(model, trials=4)
    g = group_with_layer(res.analysis, "fc")
    assert g.channels == 16 and set(g.layers) == {"fc", "up"}
    r = prune(model, ratio=0.5)
    shapes = {i.name: list(onnx.numpy_helper.to_array(i).shape) for i in r.model.graph.initializer}
    assert [72, 8] in shapes.values()  # fc: 8 of 16 channels x 9 features each
    assert [8, 2, 3, 3] in shapes.values()  # ConvTranspose: half its inputs and outputs
    assert r.verification.passed


def test_channel_last_transpose_then_matmul(gb):
    x = gb.input("x", [2, 3, 4, 4])
    h = _conv(gb, x, 3, 8, "c1")
    h = gb.op("Transpose", [h], perm=[0, 2, 3, 1])
    h = gb.relu(gb.matmul(h, 8, 6, name="mm"))
    h = gb.op("Transpose", [h], perm=[0, 3, 1, 2])
    y = gb.conv(h, 6, 2, name="c2")
    res = check_oracle(gb.build([y]), trials=4)
    assert set(group_with_layer(res.analysis, "c1").layers) == {"c1", "mm"}
    assert set(group_with_layer(res.analysis, "c2").layers) == {"mm", "c2"}


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze(opset):
    b = GraphBuilder(opset=opset)
    x = b.input("x", [2, 3, 4, 4])
    h = b.op("GlobalAveragePool", [_conv(b, x, 3, 8, "c1")])
    if opset < 13:
        h = b.op("Squeeze", [h], axes=[2, 3])
    else:
        h = b.op("Squeeze", [h, b.const(np.array([2, 3]))])
    h = b.relu(b.gemm(h, 8, 6, name="fc"))
    if opset < 13:
        h = b.op("Unsqueeze", [h], axes=[2, 3])
    else:
        h = b.op("Unsqueeze", [h, b.const(np.array([2, 3]))])
    y = b.conv(h, 6, 2, k=1, name="c2")
    res = check_oracle(b.build([y]), trials=4)
    assert set(group_with_layer(res.analysis, "c1").layers) == {"c1", "fc"}
    assert set(group_with_layer(res.analysis, "c2").layers) == {"fc", "c2"}


def test_pad_spatial_ok_channel_frozen(gb):
    x = gb.input("x", [1, 3, 6, 6])
    h = _conv(gb, x, 3, 8, "c1")
    h = gb.op("Pad", [h, gb.const(np.array([0, 0, 1, 1, 0, 0, 1, 1]))], mode="reflect")
    h2 = _conv(gb, h, 8, 6, "c2")
    h2 = gb.op("Pad", [h2, gb.const(np.array([0, 1, 0, 0, 0, 1, 0, 0]))], name="padc")
    y = gb.conv(h2, 8, 2)
    res = check_oracle(gb.build([y]), trials=3)
    assert not group_with_layer(res.analysis, "c1").frozen
    g = group_of_tensor(res.analysis, "c2_out0")
    assert g.frozen and "padc" in g.reason


@pytest.mark.parametrize("mode", ["scales", "sizes", "upsample"])
def test_resize_keeps_channels(mode):
    b = GraphBuilder(opset=9 if mode == "upsample" else 13)
    x = b.input("x", [1, 3, 4, 4])
    h = _conv(b, x, 3, 8, "c1")
    if mode == "upsample":
        h = b.op("Upsample", [h, b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    elif mode == "scales":
        h = b.op("Resize", [h, "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    else:
        h = b.op("Resize", [h, "", "", b.const(np.array([1, 8, 8, 8], np.int64))],
                 mode="linear", name="rs")
    y = b.conv(h, 8, 2, name="c2")
    model = b.build([y])
    res = check_oracle(model, trials=4)
    assert not group_with_layer(res.analysis, "c1").frozen
    if mode == "sizes":
        r = prune(model, ratio=0.5)
        sizes = next(onnx.numpy_helper.to_array(i) for i in r.model.graph.initializer
                     if i.name.startswith("rs_in3"))
        assert sizes.tolist() == [1, 4, 8, 8]


def test_gather_on_spatial_axis(gb):
    x = gb.input("x", [1, 3, 4, 4])
    h = _conv(gb, x, 3, 8, "c1")
    h = gb.op("Gather", [h, gb.const(np.array([0, 2], np.int64))], axis=2)
    y = gb.conv(h, 8, 2, name="c2")
    res = check_oracle(gb.build([y]), trials=3)
    assert not group_with_layer(res.analysis, "c1").frozen


def test_unet_style_skip_with_resize(gb):
    x = gb.input("x", [1, 3, 8, 8])
    e1 = _conv(gb, x, 3, 8, "enc1")
    e2 = _conv(gb, gb.op("MaxPool", [e1], kernel_shape=[2, 2], strides=[2, 2]), 8, 16, "enc2")
    up = gb.op("Resize", [e2, "", gb.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    h = gb.op("Concat", [up, e1], axis=1, name="skip")
    y = gb.conv(_conv(gb, h, 24, 8, "dec"), 8, 2, name="out")
    res = check_oracle(gb.build([y]), trials=5)
    assert set(group_with_layer(res.analysis, "enc1").layers) == {"enc1", "enc2", "dec"}
    assert set(group_of_tensor(res.analysis, "enc2_out0").layers) == {"enc2", "dec"}


@pytest.mark.parametrize("indices", [[3, 1, 0, 2, 5, 4], [0, 2, 4], [1, 1, 5, 0], 4])
def test_gather_on_channels_links_outputs_to_inputs(gb, indices):
    x = gb.input("x", [2, 3, 4, 4])
    h = _conv(gb, x, 3, 6, "c1")
    g = gb.op("Gather", [h, gb.const(np.array(indices, np.int64))], axis=1, name="pick")
    if isinstance(indices, int):
        g = gb.op("Unsqueeze", [g, gb.const(np.array([1]))])
    n = 1 if isinstance(indices, int) else len(indices)
    y = gb.conv(g, n, 2, name="c2")
    y2 = gb.conv(h, 6, 2, name="side")  # c1's channels are also read directly
    res = check_oracle(gb.build([gb.op("Add", [y, y2])]), trials=6)
    a = res.analysis
    c1 = group_with_layer(a, "c1")
    assert c1.channels == 6 and not c1.frozen
    if isinstance(indices, int):
        assert c1.frozen_units == 1
        return
    picked = group_of_tensor(a, "pick_out0")
    assert picked is not c1 and picked.channels == n and not picked.frozen
    # every link says: while a picked channel stays, the c1 channel it copies stays
    assert len(a.links) == n  # one (picked, source) pair per output channel
    assert set(a.unit_group[a.links[:, 0]]) == {picked.id}
    assert set(a.unit_group[a.links[:, 1]]) == {c1.id}
    # c1 cannot lose a channel the gather still reads
    removed = np.zeros(a.num_units, bool)
    removed[c1.units] = True
    removed[c1.units[0]] = False
    kept = a.enforce_links(removed)
    assert set(c1.units[~kept[c1.units]]) == set(c1.units[np.unique(indices)]) | {c1.units[0]}
