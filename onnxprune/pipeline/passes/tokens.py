"""The pass that keeps only the tokens an application reads (``rewrite/tokens.py``)."""

from __future__ import annotations

import numpy as np

from ...errors import VerificationError
from ...ir.runtime import session
from ...options import Option, OptionError, text
from ...rewrite.tokens import NEAREST, TokenError, fallback_ids, keep_tokens
from ..base import Context, Pass, PassResult
from ..support.inputs import verification_feeds
from .classes import tokens
from .frontend import compare_with_input


def _fallback(value) -> str | int:
    if isinstance(value, str) and value.strip().lower() == NEAREST:
        return NEAREST
    if isinstance(value, bool):
        raise ValueError(f"{value!r}: 'nearest' or a token id")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r}: 'nearest' or a token id") from None


class KeepTokens(Pass):
    name = "tokens"
    description = ("Keep only the given tokens of an input vocabulary: the embedding table "
                   "loses the other rows, removed ids read a kept token's row (same ids in).")
    requires = ("graph",)
    provides = ("origin",)
    uses = ("normalize_deferred", "source", "tokens")

    options = (
        Option("keep", None, "keep only these token ids of the input vocabulary (ids and "
               "ranges '0-999,2000', or a file of them): the embedding table loses the other "
               "rows and a remapping table sends each removed id to its fallback's row; the "
               "tokenizer and the model's inputs stay the same. Parameter and MAC targets "
               "count from the model before", parse=tokens, public="keep_tokens",
               metavar="I-J,K|FILE", type_name="str"),
        Option("input", None, "the integer input whose tokens keep_tokens names (default: the "
               "one indexing the largest embedding table)", parse=text,
               public="keep_tokens_input", metavar="NAME", type_name="str"),
        Option("fallback", NEAREST, "what a removed token reads: 'nearest' (the kept token "
               "whose embedding is most similar, by cosine) or a kept token id (e.g. the "
               "tokenizer's [UNK])", parse=_fallback, public="keep_tokens_fallback",
               aliases=("token_fallback",),
               metavar="nearest|ID", type_name="str"),
    )

    def setup(self) -> None:
        if self.keep is None:
            raise OptionError(self.name, "keep", "name the tokens to keep")

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        if ctx.normalize_deferred and ctx.source is not None and ctx.origin is None:
            compare_with_input(ctx)  # verification compares with the trimmed model from now
        before = graph.copy()
        try:
            trim = keep_tokens(graph, self.keep, self.input, self.fallback)
        except TokenError as err:
            raise OptionError(self.name, "keep", str(err)) from None
        _check(ctx, before, trim)
        if ctx.origin is None:  # keep_classes ran first: its origin is the model before both
            ctx.origin = before
        ctx.tokens = {"input": trim.input, "vocabulary": trim.vocabulary, "kept": trim.kept,
                      "tables": list(trim.tables), "fallback": trim.fallback,
                      "params_removed": trim.params_removed,
                      "remap_entries": trim.remap_entries}
        return PassResult(True, dict(ctx.tokens))


def _check(ctx: Context, before, trim) -> None:
    """The trimmed model computes exactly what the model before does with each removed id
    replaced by its fallback, on ids drawn over the whole vocabulary (half of them kept) at
    every set of verification shapes; otherwise nothing is written."""
    kept = np.asarray(trim.indices)
    # the remapping itself, independently of the oracle built from it: kept ids read their own
    # rows, every other id a kept one
    if not (np.array_equal(trim.remap[kept], kept) and np.isin(trim.remap, kept).all()):
        raise VerificationError(f"keeping tokens of {trim.input}: the remapping sends a kept id "
                                "elsewhere or a removed one to no kept token; nothing written")
    oracle = before.copy()
    fallback_ids(oracle, trim)
    want_model, got_model = ctx.skeleton(oracle), ctx.skeleton()
    feeds = verification_feeds(ctx, want_model)
    a_sess, b_sess = session(want_model), session(got_model)
    for i, f in enumerate(feeds):
        f = dict(f)
        ids = f[trim.input]
        rng = np.random.default_rng(i)
        drawn = np.where(rng.random(ids.shape) < 0.5, rng.choice(kept, ids.shape),
                         rng.integers(0, trim.vocabulary, ids.shape))
        f[trim.input] = drawn.astype(ids.dtype)
        for name, w, g in zip((o.name for o in oracle.outputs), a_sess.run(None, f),
                              b_sess.run(None, f), strict=True):
            if w.shape != g.shape or not np.array_equal(w, g, equal_nan=True):
                raise VerificationError(
                    f"keeping tokens of {trim.input} changed {name} (it must read exactly what "
                    "the model does with removed ids replaced by their fallback); nothing "
                    "written")
