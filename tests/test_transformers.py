"""Hugging Face transformers (random small configs, torch.onnx exports with a dynamic batch and
sequence and a partly zero attention mask): heads, feed-forward and, where the output allows,
the hidden width prune, checked against the mask oracle at two sequence lengths."""

import numpy as np
import onnx
import pytest

from onnxprune.api import prune
from onnxprune.testing import check_oracle

pytest.importorskip("transformers")
from onnxprune.zoo import transformers_zoo as tz  # noqa: E402

# head units: query heads (MHA), or key/value groups with their query heads (GQA)
HEAD_UNITS = {"bert": 4, "albert": 4, "gpt2": 4, "llama": 2, "qwen2": 2}
HEAD_DIM = tz.HIDDEN // tz.HEADS
SHARED = {"albert"}  # one layer's weights shared by every layer


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(arch: str, head: bool = False, dynamo: bool = False) -> onnx.ModelProto:
        key = (arch, head, dynamo)
        if key not in cache:
            path = tmp_path_factory.mktemp(arch) / "m.onnx"
            cache[key] = onnx.load(str(tz.export(arch, path, head=head, dynamo=dynamo)))
        return cache[key]

    return get


def feeds(seq: int, batch: int = 2) -> dict[str, np.ndarray]:
    ids, mask = tz.sample_inputs(batch, seq, seed=seq)
    assert (mask == 0).any() and (mask == 1).any()
    return {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}


def _layers(group) -> str:
    return " ".join(group.layers)


@pytest.mark.parametrize("arch", sorted(HEAD_UNITS))
def test_heads_and_ffn_prune_under_an_attention_mask(exported, arch):
    model = exported(arch)
    for seq in (7, 13):
        res = check_oracle(model, trials=3, feeds=feeds(seq))
    groups = res.analysis.groups
    layers = 1 if arch in SHARED else tz.LAYERS
    heads = [g for g in groups if not g.frozen and g.channels == HEAD_UNITS[arch]]
    ffn = [g for g in groups if not g.frozen and g.channels == tz.FFN]
    assert len(heads) == layers, [(g.channels, g.frozen, g.reason) for g in groups]
    assert len(ffn) == layers
    # the hidden state is the graph output: its width stays, and says why
    hidden = [g for g in groups if g.channels == tz.HIDDEN and g.frozen]
    assert hidden and all("graph output" in g.reason for g in hidden)
    r = prune(model, ratio=0.5)
    assert r.verification.passed and r.params_after < r.params_before
    assert len(r.verification.shapes) == 2  # two sequence lengths


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_grouped_query_attention_prunes_whole_kv_groups_and_keeps_rotary_pairs(exported, arch):
    res = check_oracle(exported(arch), trials=4, feeds=feeds(9))
    groups = [g for g in res.analysis.groups if not g.frozen]
    kv = [g for g in groups if g.channels == HEAD_UNITS[arch]]
    for g in kv:  # a key/value head goes with the query heads that read it
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            assert proj in _layers(g)
    # rotary embeddings pair the head dims: no unit may cut q or k dims inside a head
    assert not [g for g in groups if g.channels in (HEAD_DIM, HEAD_DIM // 2)
                and ("q_proj" in _layers(g) or "k_proj" in _layers(g))]


@pytest.mark.parametrize("arch", ["bert", "albert", "gpt2", "llama", "qwen2"])
def test_hidden_width_prunes_through_embeddings_and_norms(exported, arch):
    model = exported(arch, head=True)
    res = check_oracle(model, trials=3, feeds=feeds(11))
    groups = res.analysis.groups
    width = tz.HIDDEN if arch != "albert" else 16  # ALBERT: the factorized embedding width
    stream = [g for g in groups if not g.frozen and g.channels == width
              and "Gather" in _layers(g)]
    assert stream, [(g.channels, g.frozen, g.reason) for g in groups]
    vocab = [g for g in groups if g.channels == tz.VOCAB]
    assert vocab and all(g.frozen and "graph output" in g.reason for g in vocab)
    r = prune(model, ratio=0.25)
    assert r.verification.passed and r.params_after < r.params_before
    # the token embedding table lost columns
    tables = [i for i in r.model.graph.initializer if len(i.dims) == 2 and i.dims[0] == tz.VOCAB]
    assert tables and min(i.dims[1] for i in tables) < width


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_the_dynamo_exporter_reaches_the_same_widths(exported, arch):
    """torch.export's ONNX graphs (decomposed attention, other shape code) prune like the
    TorchScript ones: heads, FFN and hidden width."""
    model = exported(arch, head=True, dynamo=True)
    res = check_oracle(model, trials=3, feeds=feeds(10))
    open_ = sorted(g.channels for g in res.analysis.groups if not g.frozen)
    want = sorted(g.channels for g in check_oracle(exported(arch, head=True), trials=1,
                                                    feeds=feeds(10)).analysis.groups
                  if not g.frozen)
    assert open_ == want and tz.HIDDEN in open_ and tz.FFN in open_
    r = prune(model, ratio=0.5)
    assert r.verification.passed and r.params_after < r.params_before
    # distillation's torch interpreter runs them (their GatherND too), as onnxruntime does
    import torch

    from onnxprune.ir.runtime import session
    from onnxprune.recover.distill import distill
    from onnxprune.recover.torch_bridge import TorchGraph

    data = feeds(10, batch=4)
    for m in (model, r.model):
        with torch.no_grad():
            got = TorchGraph(m).run(data)[0].numpy()
        want = session(m).run(None, data)[0]
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert "GatherND" in {n.op_type for n in model.graph.node}
    _, info = distill(r.model, model, data, steps=2, lr=1e-4, patience=None, loss="kl")
    assert info["steps"] == 2 and np.isfinite(info["history"][-1][1])


@pytest.mark.parametrize("arch", sorted(HEAD_UNITS))
def test_attention_and_mlp_blocks_are_found_and_removed(exported, arch, tmp_path):
    """Every layer's attention and MLP sub-blocks (pre-norm Llama/Qwen2/GPT-2, post-norm
    BERT/ALBERT) are removable blocks; two removed, the oracle (a gate per block) proves it at
    two sequence lengths."""
    from onnxprune.api import analyze

    model = exported(arch)
    blocks = analyze(model).blocks
    assert [b.kind for b in blocks] == ["attention", "mlp"] * tz.LAYERS
    assert all(b.removable for b in blocks)
    r = prune(model, tmp_path / "m.onnx", remove_blocks=2)
    assert r.verification.passed and len(r.depth["removed"]) == 2
    assert {s["input_ids"][1] for s in r.verification.shapes} == {32, 64}
    assert r.params_after < r.params_before
    if arch != "gpt2":  # GPT-2's Conv1D Gemms read [rows, width] of rows shape inference cannot
        # tell through its attention (counted once); without the removed attention it can
        assert r.macs_after < r.macs_before


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_a_pre_norm_layer_goes_whole(exported, arch, tmp_path):
    """block_unit layer: a pre-norm layer's attention and MLP as one unit (Llama's norms read
    the stream through a cast); one of the two layers removed, verified."""
    r = prune(exported(arch), tmp_path / "m.onnx", remove_blocks=1, block_unit="layer")
    assert r.verification.passed and r.depth["removable"] == tz.LAYERS
    assert [b["kind"] for b in r.depth["removed"]] == ["layer"]
