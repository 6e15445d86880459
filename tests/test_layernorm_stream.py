"""Residual streams through LayerNormalization: the embedding width of a ViT (class token,
position embedding, pre-norm blocks, final norm, head) and the stage width of a ConvNeXt
(channels-last LayerNorm2d, layer scale) are prunable, with statistics over the kept channels,
and every removal equals the oracle whose norms weight their statistics by the gates."""

import contextlib
import io

import numpy as np
import onnx
import pytest

from onnxprune.api import prune
from onnxprune.testing import check_oracle

torch = pytest.importorskip("torch")
nn = torch.nn


class TinyViT(nn.Module):
    def __init__(self, d=24, heads=4, hidden=48, depth=2, classes=5):
        super().__init__()
        self.embed = nn.Conv2d(3, d, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, 5, d))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d, heads, hidden, dropout=0.0, batch_first=True,
                                       norm_first=True) for _ in range(depth))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.dw = nn.Conv2d(d, d, 7, padding=3, groups=d)
        self.norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.scale = nn.Parameter(torch.rand(d, 1, 1) + 0.5)

    def forward(self, x):
        h = self.norm(self.dw(x).permute(0, 2, 3, 1))
        h = self.fc2(nn.functional.gelu(self.fc1(h))).permute(0, 3, 1, 2)
        return x + self.scale * h


class TinyConvNeXt(nn.Module):
    def __init__(self, dims=(8, 16), classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 2, stride=2), LayerNorm2d(dims[0]))
        self.stage1 = ConvNeXtBlock(dims[0])
        self.down = nn.Sequential(LayerNorm2d(dims[0]), nn.Conv2d(dims[0], dims[1], 2, stride=2))
        self.stage2 = ConvNeXtBlock(dims[1])
        self.norm = nn.LayerNorm(dims[1])  # (the dynamo exporter writes a pooled
        self.head = nn.Linear(dims[1], classes)  # LayerNorm2d as an as_strided Gather)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean((2, 3))))


class TinySwin(nn.Module):
    """Patch embedding, then a shifted-window block: roll, window partition (reshape and
    permute around the spatial axes), windowed attention with explicit heads, window reverse,
    roll back; pre-norm residuals; a pooled head."""

    def __init__(self, d=16, heads=2, ws=2, classes=5):
        super().__init__()
        self.d, self.heads, self.ws = d, heads, ws
        self.embed = nn.Conv2d(3, d, 2, stride=2)
        self.norm1, self.norm2, self.norm = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = self.embed(x).permute(0, 2, 3, 1)  # B, H, W, C
        b, h, w, c = x.shape
        ws, nh = self.ws, self.heads
        t = torch.roll(self.norm1(x), shifts=(-1, -1), dims=(1, 2))
        t = t.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        qkv = self.qkv(t).reshape(t.shape[0], ws * ws, 3, nh, c // nh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1) * (c // nh) ** -0.5).softmax(-1)
        t = self.proj((att @ v).transpose(1, 2).reshape(t.shape[0], ws * ws, c))
        t = t.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        x = x + torch.roll(t, shifts=(1, 1), dims=(1, 2))
        x = x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))
        return self.head(self.norm(x).mean((1, 2)))


def _export(module, path, dynamo, static: int = 0):
    """``static``: a fixed batch size (0: a dynamic batch)."""
    kw = {"input_names": ["x"], "output_names": ["y"], "opset_version": 18 if dynamo else 17}
    if static:
        pass
    elif dynamo:
        kw["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    else:
        kw["dynamic_axes"] = {"x": {0: "batch"}, "y": {0: "batch"}}
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(module.eval(), (torch.randn(static or 2, 3, 8, 8),), str(path),
                          dynamo=dynamo, **kw)
    return onnx.load(str(path))


def _layernorms(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "LayerNormalization"]


@pytest.mark.parametrize("dynamo", [False, True])
def test_vit_embedding_width_is_prunable(tmp_path, dynamo):
    torch.manual_seed(0)
    model = _export(TinyViT(), tmp_path / "vit.onnx", dynamo)
    res = check_oracle(model, trials=4)
    stream = [g for g in res.analysis.groups if g.channels == 24 and not g.frozen]
    assert len(stream) == 1, [(g.channels, g.frozen, g.reason) for g in res.analysis.groups]
    norms = set(_layernorms(model))
    assert len(norms) == 5 and norms <= set(stream[0].layers)  # 2 per block + the final one
    stats = {g.node for g in res.analysis.gates if g.kind == "stats"}
    assert stats == norms
    r = prune(model, ratio=0.5)
    assert r.verification.passed
    ln = next(n for n in r.model.graph.node if n.op_type == "LayerNormalization")
    scale = next(i for i in r.model.graph.initializer if i.name == ln.input[1])
    assert scale.dims[0] == 12


@pytest.mark.parametrize("batch", [1, 3])
def test_multihead_attention_heads_with_a_static_batch(tmp_path, batch):
    """nn.MultiheadAttention folds heads into the batch axis: exported for a fixed batch the
    fold is a known reshape (heads tiled over the samples) and whole heads are units; under a
    dynamic batch the head axis is symbolic, and the head dims (the same in every head, q, k
    and v together) are the units instead."""
    torch.manual_seed(0)
    path = tmp_path / "s.onnx"
    static = check_oracle(_export(TinyViT(), path, False, static=batch), trials=3)
    widths = sorted(g.channels for g in static.analysis.groups if not g.frozen)
    assert widths == [4, 4, 24, 48, 48], widths
    dynamic = check_oracle(_export(TinyViT(), tmp_path / "d.onnx", False), trials=3)
    widths = sorted(g.channels for g in dynamic.analysis.groups if not g.frozen)
    assert widths == [6, 6, 24, 48, 48], widths  # head dims, the stream, the MLPs


@pytest.mark.parametrize("dynamo", [False, True])
def test_swin_windows_leave_channels_intact(tmp_path, dynamo):
    torch.manual_seed(0)
    model = _export(TinySwin(), tmp_path / "swin.onnx", dynamo)
    res = check_oracle(model, trials=4)
    widths = sorted(g.channels for g in res.analysis.groups if not g.frozen)
    assert widths == [2, 16, 32], [(g.channels, g.frozen, g.reason)
                                    for g in res.analysis.groups]  # heads, stream, MLP
    r = prune(model, ratio=0.5)
    assert r.verification.passed and r.params_after < 0.4 * r.params_before


@pytest.mark.parametrize("dynamo", [False, True])
def test_convnext_stage_width_is_prunable(tmp_path, dynamo):
    torch.manual_seed(0)
    model = _export(TinyConvNeXt(), tmp_path / "cnx.onnx", dynamo)
    res = check_oracle(model, trials=4)
    widths = sorted(g.channels for g in res.analysis.groups if not g.frozen)
    assert widths == [8, 16, 32, 64], [(g.channels, g.frozen, g.reason)
                                       for g in res.analysis.groups]
    r = prune(model, ratio=0.5)
    assert r.verification.passed and r.params_after < 0.35 * r.params_before


def test_gated_norm_weights_statistics_like_removal():
    """The oracle's weighted LayerNorm with binary gates equals LayerNorm over kept channels."""
    from onnxprune.zoo.builder import GraphBuilder

    rng = np.random.default_rng(1)
    b = GraphBuilder(opset=17)
    x = b.input("x", [3, 10])
    h = b.matmul(x, 10, 6, name="mm")
    y = b.op("LayerNormalization", [h, b.const(rng.uniform(0.5, 2, 6).astype(np.float32)),
                                    b.const(rng.normal(0, 1, 6).astype(np.float32))],
             axis=-1, epsilon=1e-3, name="ln")
    out = b.matmul(y, 6, 2, name="head")
    model = b.build([out])
    from onnxprune.analysis.channels import analyze_channels
    from onnxprune.ir.graph import import_model
    from onnxprune.verify.oracle import Oracle, session

    analysis = analyze_channels(import_model(model))
    oracle = Oracle(model, analysis)
    feeds = {"x": rng.normal(size=(3, 10)).astype(np.float32)}
    keep = np.ones(analysis.num_units, bool)
    keep[analysis.slots[("mm_out0", 1)][[1, 4]]] = False
    got = oracle.run(feeds, keep)[0]
    # by hand: LayerNorm over the 4 kept channels, head reading only those
    w = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    mm = next(n for n in model.graph.node if n.name == "mm")
    ln = next(n for n in model.graph.node if n.name == "ln")
    head = next(n for n in model.graph.node if n.name == "head")
    k = np.array([0, 2, 3, 5])
    a = (feeds["x"] @ w[mm.input[1]])[:, k]
    z = (a - a.mean(1, keepdims=True)) / np.sqrt(a.var(1, keepdims=True) + 1e-3)
    want = (z * w[ln.input[1]][k] + w[ln.input[2]][k]) @ w[head.input[1]][k]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert session(model).run(None, feeds)[0].shape == want.shape
