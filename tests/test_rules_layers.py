"""Op rules for layers that own channels: Conv (any group), ConvTranspose, Gemm, MatMul, norms."""

import numpy as np
import pytest
from conftest import cbr, group_of_tensor, group_with_layer, groups_summary

from onnxprune.testing import check_oracle
from onnxprune.zoo.builder import GraphBuilder


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


@pytest.mark.parametrize("trans_b", [True, False])
def test_gemm_chain(gb, trans_b):
    x = gb.input("x", [3, 10])
    h = gb.relu(gb.gemm(x, 10, 16, trans_b=trans_b, name="fc1"))
    h = gb.relu(gb.gemm(h, 16, 12, trans_b=not trans_b, name="fc2"))
    y = gb.gemm(h, 12, 3, name="fc3")
    res = check_oracle(gb.build([y]), trials=4)
    assert groups_summary(res.analysis) == [(3, True), (12, False), (16, False)]


def test_gemm_bias_shapes(gb):
    x = gb.input("x", [2, 6])
    w1 = gb.weight(8, 6)
    h = gb.relu(gb.op("Gemm", [x, w1, gb.const(np.ones((1, 8), np.float32))], transB=1))
    w2 = gb.weight(5, 8)
    h = gb.relu(gb.op("Gemm", [h, w2, gb.const(np.float32(0.5))], transB=1, alpha=0.5, beta=2.0))
    y = gb.gemm(h, 5, 2)
    res = check_oracle(gb.build([y]), trials=4)
    assert groups_summary(res.analysis) == [(2, True), (5, False), (8, False)]


def test_matmul_with_bias_on_3d_input(gb):
    x = gb.input("x", [2, 5, 8])
    h = gb.op("Add", [gb.matmul(x, 8, 16, name="mm1"), gb.const(np.ones(16, np.float32))])
    h = gb.relu(h)
    y = gb.matmul(h, 16, 4, name="mm2")
    res = check_oracle(gb.build([y]), trials=4)
    g = group_with_layer(res.analysis, "mm1")
    assert g.channels == 16 and not g.frozen


def test_matmul_of_two_activations_joins_the_contracted_channels(gb):
    x = gb.input("x", [2, 4, 8])
    q = gb.matmul(x, 8, 8, name="q")
    k = gb.matmul(x, 8, 8, name="k")
    s = gb.op("MatMul", [q, gb.op("Transpose", [k], perm=[0, 2, 1])], name="scores")
    y = gb.matmul(s, 4, 3)
    res = check_oracle(gb.build([y]), trials=4)
    g = group_with_layer(res.analysis, "q")
    assert not g.frozen and {"q", "k"} <= set(g.layers)  # q's column j goes with k's


def test_batchnorm_kept_when_not_foldable(gb):
    x = gb.input("x", [2, 3, 8, 8])
    h = gb.relu(gb.conv(x, 3, 8, name="c1"))
    h = gb.relu(gb.batchnorm(h, 8, name="bn"))  # after a Relu: cannot be folded
    y = gb.conv(h, 8, 2, name="c2")
    model = gb.build([y])
    res = check_oracle(model, trials=4)
    g = group_with_layer(res.analysis, "bn")
    assert {"c1", "bn", "c2"} <= set(g.layers)
    # 4 BN vectors, c1's weight rows and bias, c2's weight columns
    assert len(g.params) == 7 and all(p.size == 8 and p.count == 8 for p in g.params)


def test_instance_norm_and_prelu(gb):
    x = gb.input("x", [2, 3, 8, 8])
    h = gb.conv(x, 3, 6, name="c1")
    h = gb.op("InstanceNormalization", [h, gb.const(np.ones(6, np.float32) * 1.5),
                                        gb.const(np.arange(6, dtype=np.float32))], name="inorm")
    h = gb.op("PRelu", [h, gb.const(np.full((6, 1, 1), 0.2, np.float32))], name="prelu")
    y = gb.conv(h, 6, 2, name="c2")
    res = check_oracle(gb.build([y]), trials=4)
    g = group_with_layer(res.analysis, "inorm")
    assert g.channels == 6 and not g.frozen and {"prelu", "c1", "c2"} <= set(g.layers)


def _ln_graph(axis: int, scale_shape: tuple[int, ...], stats_out: bool = False):
    rng = np.random.default_rng(0)
    b = GraphBuilder(opset=17)
    x = b.input("x", [2, 4, 8])
    h = b.matmul(x, 8, 12, name="mm1")
    outs = b.op("LayerNormalization",
                [h, b.const(rng.uniform(0.5, 1.5, scale_shape).astype(np.float32)),
                 b.const(rng.normal(0, 0.1, scale_shape).astype(np.float32))],
                n_out=2, axis=axis, name="ln")
    y = b.matmul(outs[0], 12, 3)
    return b.build([y] + (outs[1:] if stats_out else []))


@pytest.mark.parametrize("axis,scale_shape", [(-1, (12,)), (1, (4, 12))])
def test_layer_norm_over_channels_prunes_with_stats_over_kept(axis, scale_shape):
    res = check_oracle(_ln_graph(axis, scale_shape), trials=4)
    g = group_with_layer(res.analysis, "mm1")
    assert not g.frozen and "ln" in g.layers
    assert any(gate.kind == "stats" and gate.node == "ln" for gate in res.analysis.gates)


def test_layer_norm_with_used_statistics_freezes():
    res = check_oracle(_ln_graph(-1, (12,), stats_out=True), trials=1)
    g = group_with_layer(res.analysis, "mm1")
    assert g.frozen and "Mean/InvStdDev" in g.reason


def test_expand_follows_the_kept_channels():
    """A pooled feature map broadcast back by Expand (a constant target naming the channel
    count) and a constant expanded to a computed batch size, concatenated on the channels:
    both targets follow the removal."""
    b = GraphBuilder(opset=17)
    x = b.input("x", ["n", 3, 6, 6])
    h = b.conv(x, 3, 8, 3, name="c1")
    pooled = b.op("GlobalAveragePool", [h])
    back = b.op("Expand", [pooled, b.const(np.array([1, 8, 6, 6]))], name="expand_back")
    s = b.op("Add", [h, back])
    bias = b.const(np.random.default_rng(0).normal(size=(1, 4, 1, 1)).astype(np.float32))
    tgt = b.op("Concat", [b.op("Slice", [b.op("Shape", [s]), b.const(np.array([0])),
                                        b.const(np.array([1]))]),
                          b.const(np.array([1, 6, 6]))], axis=0)
    extra = b.op("Expand", [bias, tgt], name="expand_const")
    y = b.conv(b.op("Concat", [s, extra], axis=1), 12, 2, 1, name="c2")
    res = check_oracle(b.build([y]), trials=4)
    g = group_with_layer(res.analysis, "c1")
    assert not g.frozen and "expand_back" in str(g.members)
    const = group_of_tensor(res.analysis, "expand_const_out0")
    assert not const.frozen and "expand_const" in const.layers


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("op,keepdims", [("ReduceMean", 1), ("ReduceMean", 0), ("ReduceSum", 1),
                                         ("ReduceL2", 0), ("ReduceSumSquare", 1)])
def test_reductions_over_channels(opset, op, keepdims):
    """Sums over channels are gated like mixing layers; a mean over channels becomes the mean
    over the kept ones (the oracle weights it by the gates)."""
    b = GraphBuilder(opset=opset)
    x = b.input("x", [2, 5, 4])
    h = b.matmul(x, 4, 10, name="mm1")
    if op == "ReduceSum" and opset >= 13 or opset >= 18:
        r = b.op(op, [h, b.const(np.array([-1]))], keepdims=keepdims, name="red")
    else:
        r = b.op(op, [h], axes=[-1], keepdims=keepdims, name="red")
    r = r if keepdims else b.op("Unsqueeze", [r, b.const(np.array([-1]))]) if opset >= 13 \
        else b.op("Unsqueeze", [r], axes=[-1])
    y = b.matmul(b.op("Sub", [h, r]), 10, 3)
    res = check_oracle(b.build([y]), trials=4)
    g = group_with_layer(res.analysis, "mm1")
    assert not g.frozen, g.reason
    kind = {gate.node: gate.kind for gate in res.analysis.gates}["red"]
    assert kind == ("stats" if op == "ReduceMean" else "mul")


def test_reduce_max_over_channels_freezes():
    b = GraphBuilder(opset=17)
    x = b.input("x", [2, 4])
    h = b.matmul(x, 4, 6, name="mm1")
    r = b.op("ReduceMax", [h], axes=[1], keepdims=1)
    res = check_oracle(b.build([b.matmul(b.op("Add", [h, r]), 6, 2)]), trials=1)
    assert group_with_layer(res.analysis, "mm1").frozen


@pytest.mark.parametrize("opset", [14, 16])
def test_torch_layer_norm_below_opset_17(tmp_path, opset):
    """Exporters below opset 17 spell LayerNorm out (ReduceMean, Sub, Pow, ReduceMean, Sqrt,
    Div): the width it normalizes is still prunable, exactly."""
    import contextlib
    import io

    import onnx
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.LayerNorm(16), torch.nn.GELU(),
                              torch.nn.Linear(16, 3))
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(net.eval(), (torch.randn(2, 6),), str(tmp_path / "ln.onnx"),
                          dynamo=False, opset_version=opset)
    model = onnx.load(str(tmp_path / "ln.onnx"))
    assert "LayerNormalization" not in {n.op_type for n in model.graph.node}
    res = check_oracle(model, trials=4)
    assert [g.channels for g in res.analysis.groups if not g.frozen] == [16]
