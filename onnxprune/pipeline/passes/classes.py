"""The pass that keeps only the classes an application needs (``rewrite/classes.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import VerificationError
from ...ir.runtime import session
from ...options import Option, OptionError, text
from ...rewrite.classes import MARGIN, ClassError, keep_classes, parse_classes
from ..base import Context, Pass, PassResult
from ..support.inputs import verification_feeds
from .frontend import compare_with_input


def _indices(value, noun: str) -> tuple[int, ...]:
    """Indices or ranges ('0-95,18709'), a list of ints, or a file of them."""
    path = Path(value) if isinstance(value, (str, Path)) else None
    if path is not None and path.is_file():
        try:
            return parse_classes(path.read_text(), noun)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    if isinstance(value, Path) or (isinstance(value, str) and re.search(r"[/\\.]", value)):
        raise ValueError(f"{value}: no such file (nor a list of {noun} indices like 0-95,97)")
    return parse_classes(value, noun)


def _classes(value) -> tuple[int, ...]:
    return _indices(value, "class")


def tokens(value) -> tuple[int, ...]:
    return _indices(value, "token")


class KeepClasses(Pass):
    name = "classes"
    description = ("Keep only the given classes of an output: the layer computing it loses "
                   "the others' rows and the output reads a constant for them (same shape).")
    requires = ("graph",)
    provides = ("origin",)
    uses = ("classes", "normalize_deferred", "source")

    options = (
        Option("keep", None, "compute only these classes of the output (indices and ranges "
               "'0-95,18709', or a file of them): the rows of the layer producing it go, the "
               "output keeps its shape and reads the others as a fill (0 after Softmax; for "
               "logits the lowest kept score - 30). Parameter and MAC targets count from the "
               "model before",
               parse=_classes, public="keep_classes", metavar="I-J,K|FILE",
               type_name="str"),
        Option("output", None, "the output whose classes keep_classes names (default: the "
               "model's only output)", parse=text, public="keep_classes_output",
               metavar="NAME", type_name="str"),
    )

    def setup(self) -> None:
        if self.keep is None:
            raise OptionError(self.name, "keep", "name the classes to keep")

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        outputs = [t.name for t in graph.outputs]
        name = self.output
        if name is None:
            if len(outputs) != 1:
                raise OptionError(self.name, "output", f"the model has {len(outputs)} outputs "
                                  f"({', '.join(outputs)}): name the one whose classes go")
            name = outputs[0]
        if ctx.normalize_deferred and ctx.source is not None:
            compare_with_input(ctx)  # verification compares with the trimmed model from now
        origin = graph.copy()
        try:
            trimmed = keep_classes(graph, name, self.keep)
        except ClassError as err:
            raise OptionError(self.name, "keep", str(err)) from None
        _check(ctx, origin, trimmed)
        if ctx.origin is None:  # keep_tokens ran first: its origin is the model before both
            ctx.origin = origin
        ctx.classes = {"output": trimmed.output, "classes": trimmed.classes,
                       "kept": trimmed.kept, "axis": trimmed.axis, "layer": trimmed.layer,
                       "fill": trimmed.fill, "params_removed": trimmed.params_removed}
        return PassResult(True, dict(ctx.classes))


def _check(ctx: Context, origin, trimmed) -> None:
    """The trimmed model computes what the original does on the kept classes (renormalized
    over them by a Softmax or LogSoftmax on the class axis) and exactly the fill on the others,
    at every set of verification shapes; otherwise nothing is written."""
    original = ctx.skeleton(origin)
    feeds = verification_feeds(ctx, original)
    a_sess, b_sess = session(original), session(ctx.skeleton())
    index = [t.name for t in origin.outputs].index(trimmed.output)
    for f in feeds:
        want, got = a_sess.run(None, f), b_sess.run(None, f)
        why = _differs(want[index], got[index], trimmed)
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            if i != index and not np.array_equal(w, g):
                why = why or f"output {origin.outputs[i].name} changed"
        if why is not None:
            raise VerificationError(f"keeping classes of {trimmed.output} broke it ({why}); "
                                    "nothing written")


def _differs(want: np.ndarray, got: np.ndarray, trimmed) -> str | None:
    if want.shape != got.shape:
        return f"shape {list(got.shape)} instead of {list(want.shape)}"
    a, b = np.moveaxis(want, trimmed.axis, -1), np.moveaxis(got, trimmed.axis, -1)
    kept = np.zeros(a.shape[-1], bool)
    kept[list(trimmed.indices)] = True
    fill = (np.asarray(trimmed.fill, b.dtype) if trimmed.fill is not None else
            b[..., kept].min(-1, keepdims=True) - np.asarray(MARGIN, b.dtype))
    if not np.all(b[..., ~kept] == fill):
        return "the removed classes do not read the fill"
    ak, bk = a[..., kept].astype(np.float64), b[..., kept].astype(np.float64)
    if trimmed.normalizer == "Softmax":
        # rows whose kept classes underflowed to 0 in the original hold nothing to compare
        mass = ak.sum(-1, keepdims=True)
        rows = mass[..., 0] > 1e-30
        ak, bk = ak[rows] / mass[rows], bk[rows] / bk.sum(-1, keepdims=True)[rows]
    elif trimmed.normalizer == "LogSoftmax":
        ak = ak - _logsumexp(ak)
        bk = bk - _logsumexp(bk)
    scale = max(float(np.abs(ak).max(initial=0.0)), 1e-30)
    err = float(np.abs(ak - bk).max(initial=0.0)) / scale
    return f"the kept classes differ (relative {err:.3g})" if err > 1e-4 else None


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(-1, keepdims=True))
