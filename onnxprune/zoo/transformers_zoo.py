"""Small Hugging Face transformers from random configs, exported to ONNX as users export them
(torch.onnx, TorchScript; dynamic batch and sequence; a real attention mask as an input).

For tests and benchmarks of transformer pruning; needs the ``transformers`` extra. Nothing is
downloaded: every model is built from a config in code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB, HIDDEN, HEADS, LAYERS, FFN, POSITIONS = 96, 32, 4, 2, 64, 64


@dataclass(frozen=True)
class Arch:
    name: str
    config: str  # the transformers config class
    kwargs: dict
    causal: bool  # a decoder (an LM head exists) or an encoder


def _common(**extra) -> dict:
    return {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_attention_heads": HEADS,
            "num_hidden_layers": LAYERS, "intermediate_size": FFN,
            "max_position_embeddings": POSITIONS, **extra}


ARCHS = {
    "bert": Arch("bert", "BertConfig", _common(), False),
    "albert": Arch("albert", "AlbertConfig", _common(embedding_size=16), False),
    "gpt2": Arch("gpt2", "GPT2Config", {"vocab_size": VOCAB, "n_embd": HIDDEN, "n_head": HEADS,
                                       "n_layer": LAYERS, "n_inner": FFN,
                                       "n_positions": POSITIONS, "bos_token_id": 0,
                                       "eos_token_id": 0}, True),
    "llama": Arch("llama", "LlamaConfig", _common(num_key_value_heads=2), True),
    "qwen2": Arch("qwen2", "Qwen2Config", _common(num_key_value_heads=2), True),
}


def build(arch: str, head: bool = False, seed: int = 0, config: dict | None = None):
    """The torch model of ``arch`` (random weights, eval mode): the base model, or with
    ``head`` its LM head (decoders) / masked-LM head (encoders); ``config`` overrides the
    small default sizes (all-MiniLM-L6-v2's: hidden_size=384, num_hidden_layers=6, ...)."""
    import torch
    import transformers

    spec = ARCHS[arch]
    config = getattr(transformers, spec.config)(**{**spec.kwargs, **(config or {})})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    cls = (transformers.AutoModelForCausalLM if spec.causal else transformers.AutoModelForMaskedLM
           ) if head else transformers.AutoModel
    return cls.from_config(config).eval()


def export(arch: str, path: str | Path, *, head: bool = False, dynamic: bool = True,
           batch: int = 2, seq: int = 12, opset: int = 17, seed: int = 0,
           dynamo: bool = False, config: dict | None = None) -> Path:
    """``arch`` as an ONNX file: TorchScript export (``dynamo``: torch.export's, opset 18);
    ``config``: as ``build``'s."""
    import contextlib
    import io

    import torch

    model = build(arch, head=head, seed=seed, config=config)

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask):
            out = self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            return out.logits if head else out.last_hidden_state

    ids, mask = sample_inputs(batch, seq, seed)
    out_name = "logits" if head else "last_hidden_state"
    axes = {"input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            out_name: {0: "batch", 1: "sequence"}} if dynamic else None
    path = Path(path)
    names = {"input_names": ["input_ids", "attention_mask"], "output_names": [out_name]}
    if dynamo:
        b, s = torch.export.Dim("batch"), torch.export.Dim("sequence", min=2, max=POSITIONS)
        shapes = ({0: b, 1: s}, {0: b, 1: s}) if dynamic else None
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(Wrapped().eval(), (ids, mask), str(path), dynamo=True,
                              dynamic_shapes=shapes, opset_version=max(opset, 18), **names)
        return path
    with torch.no_grad():
        torch.onnx.export(Wrapped().eval(), (ids, mask), str(path), dynamo=False,
                          dynamic_axes=axes, opset_version=opset, **names)
    return path


def sample_inputs(batch: int, seq: int, seed: int = 0):
    """Token ids and a partly zero attention mask (the second sequence padded at the end)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if batch > 1:
        mask[1, seq * 2 // 3:] = 0
    return ids, mask
