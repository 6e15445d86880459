"""Text as calibration arrays: one sample a line of a ``.txt`` file, or the ``text`` field of
each line of a ``.jsonl`` file, encoded with a Hugging Face ``tokenizers`` tokenizer
(``tokenizer.json``) into the inputs the model asks for (input_ids, attention_mask,
token_type_ids), padded to the longest sample, truncated at a maximum length (reported)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .common import need

IDS = ("input_ids", "ids")
MASK = ("attention_mask", "mask")
TYPES = ("token_type_ids", "segment_ids")


def is_mask(name: str) -> bool:
    """An attention-mask input, by its name (``attention_mask``, ``mask``, ``*attention_mask``)."""
    low = name.lower()
    return low in MASK or low.endswith("attention_mask")


@dataclass(frozen=True)
class Encoded:
    arrays: dict[str, np.ndarray]
    truncated: int  # samples cut at the maximum length
    length: int


def lines(path: Path) -> list[str] | list[tuple[str, str]]:
    """The samples of a ``.txt`` (non-empty lines) or ``.jsonl`` (``text`` fields; with a
    ``text_pair`` field on every line, sentence pairs for a cross-encoder) file."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: not a readable UTF-8 text file ({err})") from None
    if path.suffix.lower() != ".jsonl":
        return [ln for ln in raw.splitlines() if ln.strip()]
    out = []
    for no, ln in enumerate(raw.splitlines(), 1):
        if not ln.strip():
            continue
        try:
            item = json.loads(ln)
        except ValueError:
            raise UsageError(f"{path}:{no}: not a JSON object") from None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise UsageError(f"{path}:{no}: no string field 'text'")
        pair = item.get("text_pair")
        if pair is not None and not isinstance(pair, str):
            raise UsageError(f"{path}:{no}: 'text_pair' is not a string")
        out.append(item["text"] if pair is None else (item["text"], pair))
    if len({isinstance(t, tuple) for t in out}) > 1:
        raise UsageError(f"{path}: some lines have a 'text_pair' and some do not (pairs on "
                         "every line, or on none)")
    return out


def tokenizer(path: Path):
    tok = need("tokenizers", "tokenizers", "text")
    try:
        return tok.Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 - the library raises its own exception types
        raise UsageError(f"{path}: not a tokenizers tokenizer.json ({str(err)[:200]})") from None


def encode(texts: list[str], tok, inputs: dict[str, np.dtype], max_length: int) -> Encoded:
    """The model's text inputs (``inputs``: name -> dtype) for ``texts``."""
    pad = tok.padding["pad_id"] if tok.padding else (tok.token_to_id("[PAD]") or 0)
    tok.no_padding()  # padded here, to the longest sample
    tok.enable_truncation(max_length)
    enc = tok.encode_batch(texts)
    truncated = sum(1 for e in enc if e.overflowing)
    n = max(len(e.ids) for e in enc)
    ids = np.full((len(enc), n), pad, np.int64)
    mask = np.zeros((len(enc), n), np.int64)
    types = np.zeros((len(enc), n), np.int64)
    for i, e in enumerate(enc):
        ids[i, :len(e.ids)] = e.ids
        mask[i, :len(e.ids)] = e.attention_mask
        types[i, :len(e.ids)] = e.type_ids
    out = {}
    for name, dtype in inputs.items():
        low = name.lower()
        src = (ids if low in IDS or low.endswith("input_ids") else mask if is_mask(name)
               else types if low in TYPES or low.endswith("token_type_ids") else None)
        if src is None:
            raise UsageError(f"input {name!r} is not a text input (input_ids, attention_mask, "
                             "token_type_ids); give its values with --input-value or an .npz")
        out[name] = src.astype(dtype)
    return Encoded(out, truncated, n)
