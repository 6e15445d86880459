"""The passes that factorize wide matrices before the analysis and multiply back, after the
cut, those whose kept rank saves nothing (``rewrite/factorize.py``)."""

from __future__ import annotations

from ...errors import VerificationError
from ...options import Option, number
from ...rewrite.factorize import ASPECT, SHARE, factorize, unfactorize
from ..base import Context, Pass, PassResult
from ..support.inputs import changed_output
from .frontend import compare_with_input

# the factorized graph against the graph before: float32 products of float64 factors, summed
# in another order (MiniLM's embedding: 2e-7 relative)
RTOL, ATOL = 1e-4, 1e-5


class Factorize(Pass):
    name = "factorize"
    description = ("Write wide matrices (token tables, classifiers) as the product of two "
                   "by their singular values, so that their rank prunes as a channel group.")
    requires = ("graph",)  # and sets origin where it factorizes (not declared: only then)
    uses = ("factors", "normalize_deferred", "origin", "source")

    options = (
        Option("mode", "auto", "on: write every matrix at least 'aspect' times longer than "
               "wide and at least 'share' of the parameters (an embedding table, a classifier "
               "over many classes) as the product of two factors, U S and Vt; its rank is then a "
               "group of channels the selection cuts like any other (best rank-k "
               "approximation), and a matrix whose kept rank saves nothing is multiplied back; "
               "auto: token tables only, with strategy sensitivity (the metric measures what "
               "each rank costs; a classifier's rank measured no better than its channels); "
               "off: leave them", choices=("auto", "on", "off"), public="factorize",
               metavar="auto|on|off", type_name="str"),
        Option("aspect", ASPECT, "long side / short side a matrix needs at least",
               parse=number(1), type_name="float"),
        Option("share", SHARE, "share of the model's parameters a matrix needs at least",
               parse=number(0, 1), type_name="float"),
    )

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        if self.mode == "off":  # auto: the pipeline adds this pass where it applies
            return PassResult(False, {"factorized": 0})
        before = graph.copy()
        if ctx.normalize_deferred and ctx.source is not None and ctx.origin is None:
            compare_with_input(ctx)  # verification compares with the factorized model from now
        kinds = ("table",) if self.mode == "auto" else ("table", "linear")
        factors = factorize(graph, self.aspect, self.share, kinds)
        if not factors:
            return PassResult(False, {"factorized": 0})
        _check(ctx, before)
        if ctx.origin is None:  # classes / tokens trimmed first: the model before them all
            ctx.origin = before
        ctx.factors = factors
        return PassResult(True, {"factorized": len(factors),
                                 "matrices": [f.weight for f in factors]})


class Unfactorize(Pass):
    name = "unfactorize"
    description = "Multiply back the factors whose kept rank saves no parameters."
    requires = ("graph",)
    uses = ("factorization", "factors")

    def run(self, ctx: Context) -> PassResult:
        if not ctx.factors:
            return PassResult(False)
        ctx.factorization = unfactorize(ctx.require("graph", self.name), ctx.factors)
        back = [f["matrix"] for f in ctx.factorization if not f["factorized"]]
        return PassResult(bool(back), {"multiplied_back": back})


def _check(ctx: Context, before) -> None:
    """The factorized graph computes what the graph before did (float rounding apart), at
    every set of verification shapes; otherwise nothing is written."""
    changed = changed_output(ctx, before, RTOL, ATOL)
    if changed is not None:
        raise VerificationError(f"factorizing wide matrices changed {changed}; please report "
                                "this")
