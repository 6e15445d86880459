"""Attention heads: ViT-style (one qkv projection split into q/k/v x heads) and BERT-style
(separate projections) encoders prune whole heads across q, k, v and the output projection."""

import contextlib
import io

import onnx
import pytest

from onnxprune.api import prune
from onnxprune.testing import check_oracle

torch = pytest.importorskip("torch")
nn = torch.nn


class ViTBlock(nn.Module):
    def __init__(self, d=32, heads=4, hidden=64):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        att = ((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


class BertSelfAttention(nn.Module):
    def __init__(self, d=32, heads=4):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.norm = nn.LayerNorm(d)

    def split(self, x):
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        ctx = (att @ v).transpose(1, 2).contiguous().view(b, n, d)
        return self.norm(x + self.out(ctx))


class EinsumAttention(BertSelfAttention):
    """The same attention written with einsum (as many research codebases do)."""

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        att = torch.softmax(torch.einsum("bhqd,bhkd->bhqk", q, k) / (d // self.heads) ** 0.5, -1)
        ctx = torch.einsum("bhqk,bhkd->bqhd", att, v).reshape(b, n, d)
        return self.norm(x + self.out(ctx))


def _export(module, path, dynamo):
    kw = {"input_names": ["x"], "output_names": ["y"], "opset_version": 18 if dynamo else 17}
    if dynamo:
        kw["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    else:
        kw["dynamic_axes"] = {"x": {0: "batch"}, "y": {0: "batch"}}
    torch.manual_seed(0)
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(module.eval(), (torch.randn(2, 5, 32),), str(path), dynamo=dynamo, **kw)
    return onnx.load(str(path))


@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize("block", [ViTBlock, BertSelfAttention, EinsumAttention])
def test_heads_are_units(tmp_path, block, dynamo):
    torch.manual_seed(0)
    model = _export(block(), tmp_path / "a.onnx", dynamo)
    res = check_oracle(model, trials=4)
    heads = [g for g in res.analysis.groups if not g.frozen and g.channels == 4]
    assert len(heads) == 1, [(g.channels, g.frozen, g.reason) for g in res.analysis.groups]
    layers = set(heads[0].layers)
    assert len(layers) >= 2  # the q/k/v projection(s) and the output projection
    r = prune(model, ratio=0.5)
    assert r.verification.passed and r.params_after < r.params_before


class MaskedAttention(nn.Module):
    """Attention over a padding mask, spelled three ways: a boolean mask into
    scaled_dot_product_attention (the dynamo exporter decomposes it, folding heads into the
    batch for k^T), the same with a causal mask built in the graph, an additive float mask."""

    def __init__(self, spelling: str, d=32, heads=4):
        super().__init__()
        self.spelling, self.heads = spelling, heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 5)

    def forward(self, x, mask):
        b, n, d = x.shape
        q, k, v = (t(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for t in (self.q, self.k, self.v))
        if self.spelling == "additive":
            add = (1.0 - mask[:, None, None, :].float()) * -1e4
            att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5 + add, -1) @ v
        else:
            keep = mask[:, None, None, :].bool()
            if self.spelling == "causal":
                keep = keep & torch.ones(n, n, dtype=torch.bool).tril()[None, None]
            att = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return self.head(self.norm(x + self.o(att.transpose(1, 2).reshape(b, n, d))))


def _export_masked(module, path, dynamo):
    x, mask = torch.randn(2, 7, 32), torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    kw = {"input_names": ["x", "mask"], "opset_version": 18 if dynamo else 17}
    if dynamo:
        b, s = torch.export.Dim("batch"), torch.export.Dim("seq")
        kw["dynamic_shapes"] = ({0: b, 1: s}, {0: b, 1: s})
    else:
        kw["dynamic_axes"] = {"x": {0: "batch", 1: "seq"}, "mask": {0: "batch", 1: "seq"}}
    torch.manual_seed(0)
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(module.eval(), (x, mask), str(path), dynamo=dynamo, **kw)
    return onnx.load(str(path))


@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize("spelling", ["boolean", "causal", "additive"])
def test_heads_prune_under_attention_masks_of_any_spelling(tmp_path, spelling, dynamo):
    import numpy as np

    torch.manual_seed(0)
    model = _export_masked(MaskedAttention(spelling), tmp_path / "m.onnx", dynamo)
    rng = np.random.default_rng(0)
    for seq in (6, 11):
        mask = np.ones((3, seq), np.int64)
        mask[1, seq // 2:] = 0
        feeds = {"x": rng.standard_normal((3, seq, 32)).astype(np.float32), "mask": mask}
        res = check_oracle(model, trials=3, feeds=feeds)
    heads = [g for g in res.analysis.groups if not g.frozen and g.channels == 4]
    assert len(heads) == 1, [(g.channels, g.frozen, g.reason) for g in res.analysis.groups]
    r = prune(model, ratio=0.5)
    assert r.verification.passed and r.params_after < r.params_before
    # heads folded into the batch (dynamo's k^T) leave no stale size behind
    for vi in r.model.graph.value_info:
        assert not any(d.dim_param.startswith("4*") for d in vi.type.tensor_type.shape.dim)
