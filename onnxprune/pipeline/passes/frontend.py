"""Front-end passes: load a model and normalize it for analysis."""

from __future__ import annotations

import weakref

from ...errors import VerificationError, first_line
from ...ir.graph import import_model, infer_shapes
from ...ir.runtime import session
from ...ir.shapes import parse_values
from ...ir.weights import proto
from ...normalize.cleanup import (
    channel_shuffles_to_gather,
    constant_reshape_targets,
    drop_identities,
    drop_zero_initial_states,
    explicit_squeeze_axes,
    name_nodes,
    pin_inputs,
    shape_ranges_to_slices,
    unshare_filled_vectors,
)
from ...normalize.control_flow import inline_constant_ifs
from ...normalize.fold_bn import fold_batchnorms
from ...options import Option, flag, resolve
from ...rewrite.share import share_identical_constants
from ..base import Context, Pass, PassResult
from ..core import Fixpoint, Pipeline
from ..support.inputs import verification_feeds
from .branches import OpenBranches


class InferShapes(Pass):
    name = "infer-shapes"
    description = "Run ONNX shape inference (with data propagation)."
    requires = ("graph",)

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        if ctx.shapes_of is not None and ctx.shapes_of() is graph:
            return PassResult(False, {"skipped": True})  # unchanged since the last inference
        ctx.graph = infer_shapes(graph)
        ctx.shapes_of = weakref.ref(ctx.graph)
        return PassResult(False)


class NameNodes(Pass):
    name = "name-nodes"
    description = "Give every node a unique name."
    requires = ("graph",)

    def run(self, ctx: Context) -> PassResult:
        return PassResult(name_nodes(ctx.require("graph", self.name)) > 0)


class FoldConstants(Pass):
    name = "fold-constants"
    description = "Fold constant sub-graphs (shape chains included when shapes are static)."
    requires = ("graph",)

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        before = len(graph.nodes)
        import onnxruntime as ort

        ort.set_default_logger_severity(3)  # folding's sessions: no optimizer chatter
        graph.fold_constants(fold_shapes=True, error_ok=True, flatten_subgraphs=False,
                             should_exclude_node=_keeps_quantization).cleanup().toposort()
        if any(True for n in graph.nodes for _ in n.subgraphs()):
            # what both branches compute from one weight folds to a copy each: one again
            share_identical_constants(graph, branches_only=True)
        return PassResult(len(graph.nodes) != before)


def _keeps_quantization(node) -> bool:
    """Quantized weights stay quantized: (De)QuantizeLinear nodes are never folded."""
    return node.op in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")


class PinInputs(Pass):
    name = "pin-inputs"
    description = "Read pinned inputs (--input-value) as constants, so what they select folds."
    requires = ("graph",)
    uses = ("pinned", "source")

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        ctx.pinned = parse_values(ctx.config.input_values, proto(ctx.source or ctx.export()))
        return PassResult(pin_inputs(graph, ctx.pinned) > 0, {"pinned": sorted(ctx.pinned)})


class ShapeRanges(Pass):
    name = "shape-ranges"
    description = "Spell Shape(start, end) as a Slice of the whole shape (so it folds right)."
    requires = ("graph",)

    def run(self, ctx: Context) -> PassResult:
        return PassResult(shape_ranges_to_slices(ctx.require("graph", self.name)) > 0)


class UnshareFilledVectors(Pass):
    name = "unshare-fills"
    description = "Give every reader its own copy of a shared all-zeros (or one-value) vector."
    requires = ("graph",)

    def run(self, ctx: Context) -> PassResult:
        return PassResult(unshare_filled_vectors(ctx.require("graph", self.name)) > 0)


class InlineConstantIfs(Pass):
    name = "inline-ifs"
    description = "Replace an If whose condition is constant by the branch it takes."
    requires = ("graph",)

    def run(self, ctx: Context) -> PassResult:
        n = inline_constant_ifs(ctx.require("graph", self.name))
        return PassResult(n > 0, {"inlined": n})


class ConstantReshapeTargets(Pass):
    name = "reshape-targets"
    description = "Replace computed Reshape targets (Shape->Slice->Concat) by constants."
    requires = ("graph",)

    def run(self, ctx: Context) -> PassResult:
        return PassResult(constant_reshape_targets(ctx.require("graph", self.name)) > 0)


class FoldBatchNorm(Pass):
    name = "fold-batchnorm"
    description = "Fold BatchNormalization into the Conv/ConvTranspose/Gemm before it."
    requires = ("graph",)
    uses = ("bn_scales",)

    def run(self, ctx: Context) -> PassResult:
        n = fold_batchnorms(ctx.require("graph", self.name), ctx.bn_scales)
        return PassResult(n > 0, {"folded": n})


class DropZeroStates(Pass):
    name = "drop-zero-states"
    description = "Drop all-zero initial states of RNN/GRU/LSTM (absent means zero)."
    requires = ("graph",)

    def run(self, ctx: Context) -> PassResult:
        return PassResult(drop_zero_initial_states(ctx.require("graph", self.name)) > 0)


class ExplicitSqueezeAxes(Pass):
    name = "squeeze-axes"
    description = "Give every Squeeze explicit axes (so a channel pruned to one is not dropped)."
    requires = ("graph",)

    def run(self, ctx: Context) -> PassResult:
        return PassResult(explicit_squeeze_axes(ctx.require("graph", self.name)) > 0)


class ShuffleToGather(Pass):
    name = "shuffle-to-gather"
    description = "Turn channel shuffles (Reshape-Transpose-Reshape) into one channel Gather."
    requires = ("graph",)

    def run(self, ctx: Context) -> PassResult:
        return PassResult(channel_shuffles_to_gather(ctx.require("graph", self.name)) > 0)


class DropIdentity(Pass):
    name = "drop-identity"
    description = "Remove Identity and inference-mode Dropout nodes."
    requires = ("graph",)

    def run(self, ctx: Context) -> PassResult:
        return PassResult(drop_identities(ctx.require("graph", self.name)) > 0)


class Cleanup(Pass):
    name = "cleanup"
    description = "Remove dead nodes and tensors; sort topologically."
    requires = ("graph",)

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        before = (len(graph.nodes), len(graph.tensors()))
        graph.cleanup().toposort()
        return PassResult((len(graph.nodes), len(graph.tensors())) != before)


class CheckNormalization(Pass):
    name = "check-normalize"
    description = ("Compare the normalized graph with the input model (at shapes chosen as "
                   "verification chooses them) when a step changed its arithmetic; otherwise "
                   "verification compares them, at no extra cost. Name the step at fault.")
    requires = ("graph",)
    uses = ("normalize_deferred", "normalize_diff", "source")
    # the steps that change arithmetic (the others rename, fold shapes, rewire or inline)
    NUMERIC = ("fold-batchnorm",)

    def run(self, ctx: Context) -> PassResult:
        from ...verify.checks import custom_domains

        if ctx.source is None or custom_domains(proto(ctx.source)):
            return PassResult(False)
        if not any(name in self.NUMERIC and result.modified for name, result in ctx.log):
            ctx.normalize_deferred = True  # verification runs the input model once, for both
            return PassResult(False, {"deferred": True})
        ctx.require("graph", self.name)
        if not compare_with_input(ctx):
            return PassResult(False, {"compared": False})
        return PassResult(False, {"relative_diff": ctx.normalize_diff})


def compare_with_input(ctx: Context) -> bool:
    """Compare the working (normalized) graph with the input model now, on one set of random
    inputs: sets ``ctx.normalize_diff``; raises naming the step at fault when they differ.
    False when the input model does not run here (nothing compared)."""
    from ...verify.compare import close, max_diffs

    try:
        feeds = verification_feeds(ctx, ctx.source, count=1)[0]
        want = session(ctx.source).run(None, feeds)
    except Exception:  # noqa: BLE001 - the input model itself does not run here
        return False
    try:
        got = session(ctx.skeleton()).run(None, feeds)
    except Exception as err:  # noqa: BLE001 - the normalized graph broke: say where
        raise VerificationError(blame_normalization(ctx, feeds, want)
                                or _normalization_failed(first_line(err))) from None
    ctx.normalize_diff = max_diffs(got, want)[1]
    ctx.normalize_deferred = False
    if not close(got, want, rtol=1e-3, atol=1e-4):
        raise VerificationError(blame_normalization(ctx, feeds, want) or _normalization_failed(
            f"outputs differ (relative {ctx.normalize_diff:.3g})"))
    return True


def _normalization_failed(what: str) -> str:
    return f"normalization changed the model ({what}); please report this"


def blame_normalization(ctx: Context, feeds: dict, want: list | None = None) -> str | None:
    """Replay the normalization from the input model, one step at a time, and name the first
    step after which the model no longer runs or computes something else (None: every step
    keeps the model as it was)."""
    from ...verify.compare import close

    try:
        want = want if want is not None else session(ctx.source).run(None, feeds)
    except Exception:  # noqa: BLE001 - the input model does not run: nothing to blame
        return None
    trial = Context(config=ctx.config, source=ctx.source, graph=import_model(ctx.source))
    for step in _flat(Normalize(check=False).passes):
        step.run(trial)
        try:
            got = session(trial.skeleton()).run(None, feeds)
        except Exception as err:  # noqa: BLE001
            return (f"normalization step {step.name!r} broke the model "
                    f"({first_line(err)}); please report this")
        if not close(got, want, rtol=1e-3, atol=1e-4):
            return (f"normalization step {step.name!r} changed the model's outputs; "
                    "please report this")
    return None


def _flat(steps: list[Pass]) -> list[Pass]:
    out = []
    for p in steps:
        out += _flat(p.passes) if isinstance(p, Pipeline) else [p]
    return out



def _folds() -> Fixpoint:
    return Fixpoint([DropIdentity(), FoldConstants(), InlineConstantIfs(),
                     ConstantReshapeTargets(), FoldBatchNorm(), DropZeroStates(), InferShapes(),
                     ShuffleToGather()])


class Normalize(Pipeline):
    """The normalization every model goes through before analysis; ``check`` compares the
    result with the input model right away."""

    name = "normalize"
    description = ("Name nodes, infer shapes, fold constants, BatchNorms and shape chains, "
                   "drop Identity/Dropout (to a fixpoint); compare with the input model.")

    options = (Option("check", True, "compare the normalized graph with the input model",
                      parse=flag, type_name="bool"),)

    def __init__(self, *args, **kwargs):
        self.values = resolve(self.name, self.options, args, kwargs)
        self.check = self.values["check"]
        steps = [
            NameNodes(),
            PinInputs(),
            ShapeRanges(),
            InferShapes(),
            # Identity first: folding would copy a weight an exporter shares through Identity
            # nodes (tied layers) once per use
            _folds(),
            Cleanup(),
            # a network in If branches the inputs choose at run time: both branches, side by
            # side (what they expose folds like the rest)
            OpenBranches(Fixpoint([_folds(), Cleanup()], max_rounds=1)),
            UnshareFilledVectors(),
            InferShapes(),
            ExplicitSqueezeAxes(),
        ]
        super().__init__([*steps, *([CheckNormalization()] if self.check else [])])

    def __repr__(self) -> str:
        return f"Normalize(check={self.check})"

