"""The tokens of a WordPiece vocabulary that English text reads most, for --keep-tokens: ranked
by the frequency of the English words they spell (wordfreq's 'large' English list, which the
package ships; no text of the held-out sentences is involved), after the tokens every text may
need whatever its words: the special tokens, punctuation, digits and numbers, single letters.
Tokens of other scripts and the [unused] ones come last."""

from __future__ import annotations

import math
from collections import defaultdict

BATCH = 4096


def _always(token: str) -> bool:
    body = token[2:] if token.startswith("##") else token
    if token.startswith("[unused"):
        return False
    if token.startswith("["):
        return True  # [PAD], [UNK], [CLS], [SEP], [MASK]
    if not body.isascii():
        return False
    return len(body) == 1 or not any(c.isalpha() for c in body)


def english_ranking(tok) -> list[int]:
    """Every token id of ``tok`` (a transformers tokenizer), the ones to keep first."""
    import wordfreq

    vocab = tok.convert_ids_to_tokens(list(range(tok.vocab_size)))
    weight: dict[int, float] = defaultdict(float)
    words = list(wordfreq.get_frequency_dict("en", wordlist="large").items())
    for s in range(0, len(words), BATCH):
        part = words[s:s + BATCH]
        for (_, freq), ids in zip(part, tok([w for w, _ in part], add_special_tokens=False)
                                  ["input_ids"], strict=True):
            for i in ids:
                weight[i] += freq
    first = [i for i, t in enumerate(vocab) if _always(t)]
    rest = sorted((i for i in range(len(vocab)) if not _always(vocab[i])),
                  key=lambda i: (-weight.get(i, 0.0), i))
    return first + rest


def tokens_for(target: float, params: int, vocab: int, dim: int) -> int:
    """How many tokens an embedding of ``vocab`` x ``dim`` keeps for the model of ``params``
    parameters to lose ``target`` of them by its rows alone."""
    return vocab - math.ceil(target * params / dim)
