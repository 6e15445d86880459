"""Architecture coverage: recurrent nets, channel shuffle, group norm, grouped convs (ResNeXt),
transformer encoders, scikit-learn models, opsets 11-21, dynamic spatial sizes."""

import contextlib
import io

import numpy as np
import onnx
import pytest
from conftest import group_with_layer

from onnxprune.api import prune
from onnxprune.testing import check_oracle, normalized
from onnxprune.zoo.builder import GraphBuilder, demo_cnn

torch = pytest.importorskip("torch")
nn = torch.nn


def _export(module, shape, path, dynamo=False, opset=17, dynamic=True):
    kw = {"input_names": ["x"], "output_names": ["y"]}
    if dynamo:
        kw["dynamic_shapes"] = ({0: torch.export.Dim("batch")},) if dynamic else None
    elif dynamic:
        kw["dynamic_axes"] = {"x": {0: "batch"}, "y": {0: "batch"}}
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(module.eval(), (torch.randn(*shape),), str(path), dynamo=dynamo,
                          opset_version=opset, **kw)
    return onnx.load(str(path))


class _Seq(nn.Module):
    def __init__(self, cell, bidirectional):
        super().__init__()
        self.pre = nn.Linear(6, 8)
        self.rnn = cell(8, 16, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(16 * (2 if bidirectional else 1), 3)

    def forward(self, x):
        h, _ = self.rnn(torch.relu(self.pre(x)))
        return self.head(h)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_hidden_units(tmp_path, cell, bidirectional):
    torch.manual_seed(0)
    model = _export(_Seq(getattr(nn, cell), bidirectional), (2, 5, 6), tmp_path / "m.onnx")
    res = check_oracle(model, trials=4)
    hidden = next(g for g in res.analysis.groups if g.channels == 16)
    assert not hidden.frozen and any("rnn" in name.lower() for name in hidden.layers)
    r = prune(model, ratio=0.5)
    node = next(n for n in r.model.graph.node if n.op_type == cell)
    assert next(a.i for a in node.attribute if a.name == "hidden_size") == 8
    assert r.verification.passed


def _shuffle(x, g):
    b, c, h, w = x.shape
    return x.view(b, g, c // g, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


class _ShuffleUnit(nn.Module):  # ShuffleNetV2, stride 1
    def __init__(self, c):
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(
            nn.Conv2d(h, h, 1), nn.BatchNorm2d(h), nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=1, groups=h), nn.BatchNorm2d(h),
            nn.Conv2d(h, h, 1), nn.BatchNorm2d(h), nn.ReLU())

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return _shuffle(torch.cat([a, self.branch(b)], 1), 2)


class _ShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 3, padding=1)
        self.units = nn.Sequential(_ShuffleUnit(24), _ShuffleUnit(24))
        self.head = nn.Conv2d(24, 5, 1)

    def forward(self, x):
        return self.head(self.units(torch.relu(self.stem(x))))


@pytest.mark.parametrize("dynamo", [False, True])
def test_channel_shuffle_becomes_a_linked_gather(tmp_path, dynamo):
    torch.manual_seed(0)
    model = _export(_ShuffleNet(), (1, 3, 8, 8), tmp_path / "s.onnx", dynamo=dynamo,
                    opset=18 if dynamo else 17)
    ops = [n.op_type for n in normalized(model).graph.node]
    assert ops.count("Gather") == 2 and "Transpose" not in ops
    res = check_oracle(model, trials=5)
    assert len(res.analysis.links) == 2 * 24  # each shuffled channel linked to its source
    assert max(g.channels for g in res.analysis.groups if not g.frozen) == 24
    assert all(not g.frozen for g in res.analysis.groups if g.channels != 5)


class _ResNeXtBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(16, 32, 1)
        self.b = nn.Conv2d(32, 32, 3, padding=1, groups=8)
        self.c = nn.Conv2d(32, 16, 1)

    def forward(self, x):
        return x + self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def test_resnext_grouped_conv_loses_equal_counts(tmp_path):
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), _ResNeXtBlock(), nn.Conv2d(16, 4, 1))
    model = _export(block, (1, 3, 8, 8), tmp_path / "x.onnx")
    res = check_oracle(model, trials=4)
    assert sorted(g.channels for g in res.analysis.groups if not g.frozen) == [4, 4, 16]
    r = prune(model, ratio=0.5)
    grouped = next(n for n in r.model.graph.node
                   if n.op_type == "Conv" and any(a.name == "group" and a.i > 1
                                                  for a in n.attribute))
    assert next(a.i for a in grouped.attribute if a.name == "group") == 8


@pytest.mark.parametrize("opset", [21])  # GroupNormalization-18 is deprecated in onnx 1.23
def test_group_normalization_prunes_whole_groups(opset):
    b = GraphBuilder(opset=opset)
    x = b.input("x", ["batch", 3, 6, 6])
    h = b.conv(x, 3, 12, name="c1")
    n = 4 if opset == 18 else 12
    h = b.op("GroupNormalization", [h, b.const(np.linspace(1, 2, n).astype(np.float32)),
                                    b.const(np.linspace(0, 1, n).astype(np.float32))],
             num_groups=4, epsilon=1e-5, name="gn")
    y = b.conv(b.relu(h), 12, 2, name="c2")
    model = b.build([(y, ["batch", 2, 6, 6])])
    res = check_oracle(model, trials=4)
    g = group_with_layer(res.analysis, "gn")
    assert g.channels == 4 and not g.frozen
    r = prune(model, ratio=0.5)
    gn = next(node for node in r.model.graph.node if node.op_type == "GroupNormalization")
    assert next(a.i for a in gn.attribute if a.name == "num_groups") == 2


def test_torch_group_norm_export(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.GroupNorm(4, 12), nn.ReLU(),
                        nn.Conv2d(12, 2, 1))
    model = _export(net, (2, 3, 6, 6), tmp_path / "g.onnx")
    res = check_oracle(model, trials=4)
    g = next(g for g in res.analysis.groups if not g.frozen)
    assert g.channels == 4  # whole groups of 3 channels


@pytest.mark.parametrize("dynamo", [False, True])
def test_transformer_encoder_prunes_its_mlp(tmp_path, dynamo):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0,
                                       batch_first=True)
    model = _export(nn.TransformerEncoder(layer, num_layers=1), (2, 5, 32), tmp_path / "t.onnx",
                    dynamo=dynamo)
    res = check_oracle(model, trials=3)
    prunable = [g for g in res.analysis.groups if not g.frozen]
    # the feed-forward width; the heads fold into the symbolic batch with the head dims last,
    # so head dims (the same in every head) are units too
    assert [g.channels for g in prunable] == [8, 64]
    frozen = [g.reason for g in res.analysis.groups if g.frozen]
    assert any("LayerNormalization" in r or "Add" in r for r in frozen)  # the residual stream


def test_scikit_learn_mlp():
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=60, random_state=0).fit(x, y)
    model = skl2onnx.to_onnx(clf, x[:1].astype(np.float32), options={"zipmap": False},
                             target_opset={"": 17, "ai.onnx.ml": 3})
    calib = {model.graph.input[0].name: x[:64].astype(np.float32)}
    res = check_oracle(model, trials=3, feeds=calib)
    assert sorted(g.channels for g in res.analysis.groups if not g.frozen) == [16, 32]


@pytest.mark.parametrize("opset", [11, 13, 15, 17, 19, 21])
def test_opsets(opset):
    from onnxprune.zoo import builder

    model = demo_cnn()
    model.opset_import[0].version = opset
    onnx.checker.check_model(model, full_check=True)
    res = check_oracle(model, trials=2)
    assert len(res.analysis.prunable_groups()) == 6
    del builder


def test_dynamic_spatial_size():
    b = GraphBuilder()
    x = b.input("x", ["batch", 3, "height", "width"])
    h = b.relu(b.conv(x, 3, 8, name="c1"))
    h = b.relu(b.conv(h, 8, 16, stride=2, name="c2"))
    y = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [h])]), 16, 4, name="fc")
    model = b.build([y])
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 12, 10)).astype(np.float32)}
    res = check_oracle(model, trials=3, feeds=feeds)
    assert sorted(g.channels for g in res.analysis.groups if not g.frozen) == [8, 16]
    r = prune(model, ratio=0.5, input_shapes={"x": [2, 3, 12, 10]})
    assert r.verification.passed
