"""A small causal language model (the Llama architecture of Hugging Face transformers) trained
in code on the Python standard library's own sources, byte-level, for perplexity benchmarks of
pruning. Nothing is downloaded: the text ships with Python, the weights start from a seed.

The ``.py`` files are split by file into train / calibration / held-out (a held-out file is
never seen in training or calibration); tokens are bytes (vocabulary 256, a NUL byte ends a
file). Needs the ``transformers`` extra.

>>> model = trained("/tmp/lm-cache")                                  # doctest: +SKIP
>>> path = export(model, "/tmp/lm.onnx")                              # doctest: +SKIP
>>> perplexity(path, windows("heldout", 256))                         # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import sysconfig
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..recover.torch_threads import torch_threads

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 256  # bytes
EOF = 0  # the byte that ends a file (NUL never occurs in source text)
SKIP = {"site-packages", "test", "tests", "idlelib", "encodings", "pydoc_data", "__pycache__"}
SPLITS = ("train", "calib", "heldout")


@dataclass(frozen=True)
class LMConfig:
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 344
    seq: int = 128  # training window
    batch: int = 32
    steps: int = 600
    lr: float = 3e-3
    warmup: int = 50
    seed: int = 0


# -- text -------------------------------------------------------------------------------------


def corpus_files(root: str | Path | None = None) -> list[Path]:
    """The standard library's ``.py`` files, sorted (tests, site-packages, IDLE and the
    generated codec / pydoc tables left out)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    return [f for f in sorted(root.rglob("*.py"))
            if not SKIP & set(f.relative_to(root).parts[:-1])]


def split_of(rel: str) -> str:
    """A file's split, from a hash of its path relative to the library: 10 % held out,
    10 % calibration, the rest training (deterministic, independent of the file list)."""
    bucket = zlib.crc32(rel.encode()) % 20
    return "heldout" if bucket < 2 else "calib" if bucket < 4 else "train"


@lru_cache(maxsize=8)
def tokens(split: str, root: str | None = None) -> np.ndarray:
    """The bytes of every file of ``split``, one after another, each ended by ``EOF``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    base = Path(root or sysconfig.get_paths()["stdlib"])
    parts = [f.read_bytes() + bytes([EOF]) for f in corpus_files(base)
             if split_of(f.relative_to(base).as_posix()) == split]
    return np.frombuffer(b"".join(parts), np.uint8)


def windows(split: str, n: int, seq: int = 128, seed: int = 0,
            root: str | None = None) -> dict[str, np.ndarray]:
    """``n`` windows of ``seq`` tokens of ``split``: ``{"input_ids", "attention_mask"}``, int64
    ``[n, seq]``. Held-out windows are evenly spaced over the whole split (no overlap when
    it is long enough), the others drawn at seeded random offsets."""
    data = tokens(split, root)
    top = len(data) - seq
    if top <= 0:
        raise ValueError(f"the {split} split has {len(data)} tokens, fewer than one window")
    if split == "heldout":
        starts = np.linspace(0, top, n).astype(np.int64)
    else:
        starts = np.random.default_rng(seed).integers(0, top, n)
    ids = np.stack([data[s:s + seq] for s in starts]).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


# -- model ------------------------------------------------------------------------------------


def build(cfg: LMConfig = LMConfig()):
    """A randomly initialised ``LlamaForCausalLM`` (eager attention, untied LM head)."""
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
        intermediate_size=cfg.ffn, max_position_embeddings=max(256, cfg.seq),
        tie_word_embeddings=False, bos_token_id=EOF, eos_token_id=EOF, pad_token_id=EOF)
    config._attn_implementation = "eager"
    torch.manual_seed(cfg.seed)
    return transformers.LlamaForCausalLM(config)


def train(model, cfg: LMConfig = LMConfig(), log: Callable[[str], None] | None = print,
          threads: int = 1) -> dict:
    """Train ``model`` in place (left in eval mode): AdamW on seeded random training windows,
    ``cfg.steps`` steps, linear warm-up, then cosine decay, on ``threads`` torch threads (one
    is the fastest on a busy small machine). Returns ``{"seconds", "steps", "loss"}`` (the
    loss: the mean of the last 50 steps)."""
    import torch

    data = torch.from_numpy(tokens("train").astype(np.int64))
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.1, betas=(0.9, 0.95))

    def rate(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        done = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * done))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, rate)
    model.train()
    start = time.perf_counter()
    with torch_threads(threads):
        loss = _steps(model, opt, sched, data, gen, cfg, log)
    model.eval()
    return {"seconds": time.perf_counter() - start, "steps": cfg.steps, "loss": loss}


def _steps(model, opt, sched, data, gen, cfg: LMConfig, log) -> float:
    import torch

    start, seen = time.perf_counter(), []
    for step in range(cfg.steps):
        starts = torch.randint(0, len(data) - cfg.seq, (cfg.batch,), generator=gen)
        ids = torch.stack([data[s:s + cfg.seq] for s in starts.tolist()])
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        seen.append(loss.item())
        if log and ((step + 1) % 50 == 0 or step + 1 == cfg.steps):
            log(f"step {step + 1}/{cfg.steps}  loss {np.mean(seen[-50:]):.3f}  "
                f"ppl {math.exp(np.mean(seen[-50:])):.2f}  {time.perf_counter() - start:.0f} s")
    return float(np.mean(seen[-50:]))


def trained(cache: str | Path, cfg: LMConfig = LMConfig(),
            log: Callable[[str], None] | None = print):
    """The model of ``cfg`` trained once: loaded from ``cache`` (a folder of
    ``save_pretrained``) when it holds this config's weights, else trained and saved there
    with what :func:`train` returned (``training.json``, read by :func:`training_record`)."""
    import transformers

    folder = Path(cache) / _key(cfg)
    if (folder / "config.json").exists():
        if log:
            log(f"loading the trained model from {folder}")
        model = transformers.LlamaForCausalLM.from_pretrained(folder)
        model.config._attn_implementation = "eager"
        return model.eval()
    model = build(cfg)
    record = train(model, cfg, log)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    (folder / "training.json").write_text(json.dumps({**record, "config": asdict(cfg)}))
    return model


def training_record(cache: str | Path, cfg: LMConfig = LMConfig()) -> dict | None:
    """What training the cached model of ``cfg`` took (seconds, steps, final loss), if known."""
    path = Path(cache) / _key(cfg) / "training.json"
    return json.loads(path.read_text()) if path.exists() else None


def _key(cfg: LMConfig) -> str:
    return "llama-" + format(zlib.crc32(repr(sorted(asdict(cfg).items())).encode()), "08x")


def export(model, path: str | Path, *, opset: int = 17, batch: int = 2, seq: int = 16,
           cache: bool = False) -> Path:
    """``model`` to ONNX as users export it (torch.onnx, TorchScript): inputs ``input_ids`` and
    ``attention_mask``, output ``logits``, dynamic batch and sequence. With ``cache`` the
    decoder takes and returns its key/value cache as Optimum's ``text-generation-with-past``
    exports do: inputs ``past_key_values.N.key|value`` ``[batch, kv_heads, past, head_dim]``
    (a past of length 0 starts a sequence), outputs ``present.N.key|value`` of the past and
    the new tokens, and an ``attention_mask`` over both."""
    import torch

    layers = model.config.num_hidden_layers
    kinds = [f"{n}.{k}" for n in range(layers) for k in ("key", "value")]
    past_names = [f"past_key_values.{k}" for k in kinds] if cache else []
    present_names = [f"present.{k}" for k in kinds] if cache else []

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask, *past):
            if not cache:
                return self.m(input_ids=input_ids, attention_mask=attention_mask,
                              use_cache=False).logits
            from transformers import DynamicCache

            kv = DynamicCache()
            for n in range(layers):
                kv.update(past[2 * n], past[2 * n + 1], n)
            out = self.m(input_ids=input_ids, attention_mask=attention_mask,
                         past_key_values=kv, use_cache=True)
            return (out.logits, *[t for layer in out.past_key_values.layers
                                  for t in (layer.keys, layer.values)])

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (batch, seq), generator=gen)
    past_len = 3 if cache else 0  # traced with a past, run with any (0 included)
    mask = torch.ones(batch, past_len + seq, dtype=torch.long)
    shape = cache_shape(model, batch, past_len)
    past = [torch.randn(*shape, generator=gen) for _ in past_names]
    total = "past_sequence_length + sequence_length" if cache else "sequence_length"
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: total},
            "logits": {0: "batch_size", 1: "sequence_length"},
            **{n: {0: "batch_size", 2: "past_sequence_length"} for n in past_names},
            **{n: {0: "batch_size", 2: total} for n in present_names}}
    path = Path(path)
    with torch.no_grad():
        torch.onnx.export(Wrapped().eval(), (ids, mask, *past), str(path), dynamo=False,
                          input_names=["input_ids", "attention_mask", *past_names],
                          output_names=["logits", *present_names],
                          dynamic_axes=axes, opset_version=opset)
    return path


def cache_shape(model, batch: int, past: int) -> tuple[int, int, int, int]:
    """The shape of one cache tensor of ``model`` (torch, or its config): ``[batch,
    kv_heads, past, head_dim]``."""
    c = getattr(model, "config", model)
    kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    return (batch, kv, past, c.hidden_size // c.num_attention_heads)


# -- quality ----------------------------------------------------------------------------------


def perplexity(model, data: dict[str, np.ndarray], chunk: int = 32) -> float:
    """Next-token perplexity of an ONNX causal LM (a path or a ``ModelProto``) on ``data``,
    run with onnxruntime on the CPU (the mean negative log-likelihood over every position).

    A model with a key/value cache (``past_key_values.*`` inputs) reads each window in two
    steps, as generation does: its first half from an empty past, the second half from the
    cache the first step returned; the logits of both steps are scored together."""
    from ..search.quality import _log_softmax

    total, count = 0.0, 0
    sess = _session(model)
    for lo in range(0, len(data["input_ids"]), chunk):
        feeds = {k: v[lo:lo + chunk] for k, v in data.items()}
        logits = _logits(sess, feeds)
        lp = _log_softmax(logits[:, :-1])
        nxt = feeds["input_ids"][:, 1:]
        nll = -np.take_along_axis(lp, nxt[..., None], axis=-1)[..., 0]
        keep = (feeds["attention_mask"][:, 1:] > 0) & (feeds["attention_mask"][:, :-1] > 0)
        total, count = total + float(nll[keep].sum()), count + int(keep.sum())
    return math.exp(total / count)


def with_past(model, data: dict[str, np.ndarray], prefix: int,
              chunk: int = 32) -> dict[str, np.ndarray]:
    """Inputs of a cached ONNX ``model`` for the tokens of ``data`` after the first
    ``prefix``: those tokens, the whole attention mask and, as ``past_key_values.*``, the
    cache ``model`` builds from the first ``prefix`` tokens (calibration data of a decoder
    that runs with a past, as it does when generating)."""
    sess = _session(model)
    names = _past_names(sess)
    parts: list[dict[str, np.ndarray]] = []
    for lo in range(0, len(data["input_ids"]), chunk):
        ids, mask = (data[k][lo:lo + chunk] for k in ("input_ids", "attention_mask"))
        present = sess.run(None, {"input_ids": ids[:, :prefix], "attention_mask": mask[:, :prefix],
                                  **_empty_past(sess, len(ids))})[1:]
        parts.append({"input_ids": ids[:, prefix:], "attention_mask": mask,
                      **dict(zip(names, present, strict=True))})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _session(model):
    """A deployed-arithmetic CPU session (onnxruntime's optimizations on) of a path or proto."""
    import onnx

    from ..ir.runtime import session

    proto = model if hasattr(model, "SerializeToString") else onnx.load(str(model))
    return session(proto, threads=2, optimized=True)


def _past_names(sess) -> list[str]:
    return [i.name for i in sess.get_inputs() if i.name.startswith("past_key_values.")]


def _empty_past(sess, batch: int) -> dict[str, np.ndarray]:
    """A cache of length 0 for every ``past_key_values.*`` input of ``sess``."""
    out = {}
    for i in sess.get_inputs():
        if i.name.startswith("past_key_values."):
            heads, dim = i.shape[1], i.shape[3]
            out[i.name] = np.zeros((batch, heads, 0, dim), np.float32)
    return out


def _logits(sess, feeds: dict[str, np.ndarray]) -> np.ndarray:
    names = _past_names(sess)
    if not names:
        return sess.run(["logits"], feeds)[0]
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    half = ids.shape[1] // 2
    first = sess.run(None, {"input_ids": ids[:, :half], "attention_mask": mask[:, :half],
                            **_empty_past(sess, len(ids))})
    second = sess.run(["logits"], {"input_ids": ids[:, half:], "attention_mask": mask,
                                   **dict(zip(names, first[1:], strict=True))})[0]
    return np.concatenate([first[0], second], axis=1)


def param_count(model) -> int:
    """The parameters of an ONNX model (every float initializer with more than one element)."""
    import onnx

    if not hasattr(model, "graph"):
        model = onnx.load(str(model))
    return sum(int(np.prod(i.dims)) for i in model.graph.initializer
               if i.data_type == onnx.TensorProto.FLOAT and int(np.prod(i.dims)) > 1)
