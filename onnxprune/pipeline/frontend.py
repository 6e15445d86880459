"""Front-end passes: load a model and normalize it for analysis."""

from __future__ import annotations

from ..ir.graph import infer_shapes
from ..normalize.cleanup import (
    channel_shuffles_to_gather,
    constant_reshape_targets,
    drop_identities,
    drop_zero_initial_states,
    explicit_squeeze_axes,
    name_nodes,
)
from ..normalize.fold_bn import fold_batchnorms
from ..options import Option, flag, resolve
from .base import Context, Pass, PassResult
from .core import Fixpoint, Pipeline


class InferShapes(Pass):
    name = "infer-shapes"
    description = "Run ONNX shape inference (with data propagation)."
    requires = ("graph",)

    def run(self, ctx: Context) -> PassResult:
        ctx.graph = infer_shapes(ctx.require("graph", self.name))
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
        graph.fold_constants(fold_shapes=True, error_ok=True,
                             should_exclude_node=_keeps_quantization).cleanup().toposort()
        return PassResult(len(graph.nodes) != before)


def _keeps_quantization(node) -> bool:
    """Quantized weights stay quantized: (De)QuantizeLinear nodes are never folded."""
    return node.op in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")


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
    description = "Compare the normalized graph with the input model on random inputs."
    requires = ("graph",)

    def run(self, ctx: Context) -> PassResult:
        from ..errors import VerificationError
        from ..ir.runtime import random_feeds, session
        from ..verify.checks import custom_domains
        from ..verify.compare import close, max_diffs

        if ctx.source is None or custom_domains(ctx.source):
            return PassResult(False)
        normalized = ctx.export(ctx.require("graph", self.name))
        try:
            feeds = random_feeds(normalized)
            want = session(ctx.source).run(None, feeds)
            got = session(normalized).run(None, feeds)
        except Exception:  # noqa: BLE001 - e.g. dynamic shapes: verification compares later
            return PassResult(False)
        ctx.normalize_diff = max_diffs(got, want)[1]
        if not close(got, want, rtol=1e-3, atol=1e-4):
            raise VerificationError(f"normalization changed the model's outputs (relative "
                                    f"difference {ctx.normalize_diff:.3g}); please report this")
        return PassResult(False, {"relative_diff": ctx.normalize_diff})


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
        super().__init__([
            NameNodes(),
            InferShapes(),
            Fixpoint([FoldConstants(), ConstantReshapeTargets(), FoldBatchNorm(),
                      DropIdentity(), DropZeroStates(), InferShapes(), ShuffleToGather()]),
            Cleanup(),
            InferShapes(),
            ExplicitSqueezeAxes(),
            *([CheckNormalization()] if self.check else []),
        ])

    def __repr__(self) -> str:
        return f"Normalize(check={self.check})"

