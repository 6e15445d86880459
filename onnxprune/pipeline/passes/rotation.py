"""The pass that turns linear bottlenecks to the principal basis of their channels on the
calibration data before the analysis (``rewrite/rotate.py``)."""

from __future__ import annotations

from ...errors import warn
from ...options import Option
from ...progress import task
from ...rewrite.rotate import basis, bottlenecks, rotate, second_moment
from ...scoring import NEEDS_DATA
from ...search.activations import fetched, within_cap
from ..base import Context, Pass, PassResult
from ..support.inputs import changed_output
from .frontend import compare_with_input

# the rotated graph against the graph before: float32 weights of float64 products, T's
# condition at most ~100 (rotate.FLOOR); the autoencoders' codes read 5e-7 absolute
RTOL, ATOL = 1e-4, 1e-5


class Rotate(Pass):
    name = "rotate"
    description = ("Turn linear bottlenecks (a layer read only by linear layers) to the "
                   "principal basis of their channels on the calibration data.")
    requires = ("graph", "calib")
    uses = ("factors", "normalize_deferred", "source")

    options = (
        Option("mode", "auto", "with calibration data, rewrite each layer read only by layers "
               "linear in it (an autoencoder's code, two Linear layers in a row) so that its "
               "channels are uncorrelated and ordered by what they carry to their readers (the "
               "same function; a cut of the weakest is then the best of its width); auto: where "
               "channels are ranked on data (not by a weight criterion such as l2: a rotated "
               "layer's weight magnitudes are the rotation's choice), factorized matrices' "
               "ranks, already in their best order, left alone; on: those too; off: none",
               choices=("auto", "on", "off"),
               public="rotate", metavar="auto|on|off", type_name="str"),
    )

    def applies(self, criterion: str | None) -> bool:
        """Whether a run whose channels rank by ``criterion`` (None: its default, on data)
        rotates."""
        return self.mode == "on" or (self.mode == "auto" and (
            criterion is None or criterion in NEEDS_DATA))

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        calib = ctx.require("calib", self.name)
        if self.mode == "off":
            return PassResult(False, {"rotated": 0})
        skip = frozenset(n for f in (ctx.factors or ()) for n in (f.first, f.node)) \
            if self.mode == "auto" else frozenset()
        found = bottlenecks(graph, skip)
        if not found:
            return PassResult(False, {"rotated": 0})
        if ctx.normalize_deferred and ctx.source is not None:
            compare_with_input(ctx)  # verification compares with the rotated model from now
        before = graph.copy()
        model = ctx.skeleton()
        names = [b.tensor for b in found]
        with task("rotate", len(found)) as advance:
            for b, (_, z) in zip(found, fetched(model, names, within_cap(model, names, calib)),
                                 strict=True):
                rotate(b, *basis(second_moment(b.producer, z), b.readers))
                del z
                advance()
        changed = changed_output(ctx, before, RTOL, ATOL)
        if changed is not None:  # ill-conditioned beyond the floor: the graph as it was
            ctx.graph = before
            warn(f"rotate: the rotated bottlenecks changed {changed} beyond float rounding; "
                 "left as they were")
            return PassResult(False, {"rotated": 0})
        return PassResult(True, {"rotated": len(found), "tensors": names,
                                 "widths": [b.width for b in found]})
