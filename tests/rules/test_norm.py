"""Normalization rules: BatchNorm, InstanceNorm, LayerNorm over channels, Softmax axes."""

import numpy as np
import pytest
from conftest import group_of_tensor, group_with_layer

from onnxprune.testing import check_oracle
from onnxprune.zoo.builder import GraphBuilder


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


def test_softmax_axis():
    b = GraphBuilder(opset=17)
    x = b.input("x", [2, 3, 4, 4])
    h = b.conv(x, 3, 8, name="c1")
    h = b.op("Softmax", [h], axis=3, name="sm_spatial")
    h = b.conv(h, 8, 6, name="c2")
    y = b.op("Softmax", [h], axis=1, name="sm_channel")
    res = check_oracle(b.build([y, b.conv(h, 6, 2)]), trials=2)
    assert not group_with_layer(res.analysis, "c1").frozen
    g = group_of_tensor(res.analysis, "c2_out0")
    assert g.frozen and "sm_channel" in g.reason



@pytest.mark.parametrize("opset, per_channel", [(21, True)])  # onnx's checker refuses 18's
def test_group_norm_removes_whole_groups(opset, per_channel):
    """Statistics over a group's channels: only whole groups go, num_groups shrinks, and the
    scale and bias (per channel at opset 21) are sliced alike."""
    from onnxprune.api import prune

    rng = np.random.default_rng(0)
    b = GraphBuilder(opset=opset)
    x = b.input("x", [2, 3, 8, 8])
    h = b.conv(x, 3, 8, name="c1")
    n = 8 if per_channel else 4
    h = b.op("GroupNormalization", [h, b.const(rng.uniform(0.5, 1.5, n).astype(np.float32)),
                                    b.const(rng.normal(0, 0.1, n).astype(np.float32))],
             num_groups=4, epsilon=1e-5, name="gn")
    y = b.conv(b.relu(h), 8, 2, name="c2")
    model = b.build([(y, [2, 2, 8, 8])])  # (shape inference stops at GroupNormalization)
    res = check_oracle(model, trials=6)
    g = group_with_layer(res.analysis, "gn")
    assert not g.frozen and {"c1", "c2"} <= set(g.layers)
    r = prune(model, ratio=0.5)
    node = next(nd for nd in r.model.graph.node if nd.op_type == "GroupNormalization")
    groups = next(a.i for a in node.attribute if a.name == "num_groups")
    kept = {i.name: list(i.dims) for i in r.model.graph.initializer}
    assert groups == 2 and kept[node.input[1]] == [4 if per_channel else 2]
    assert r.verification.passed
