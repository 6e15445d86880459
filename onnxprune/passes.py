"""The passes of the pruning pipeline: load -> normalize -> analyze -> score -> select ->
remove -> cleanup -> verify -> write. Each is a small class over a function that does the work."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from . import io
from .analysis.channels import analyze_channels
from .analysis.components import find_components, find_flows
from .errors import OutputError, UsageError, VerificationError
from .graph import export_model, import_model, infer_shapes
from .normalize.cleanup import constant_reshape_targets, drop_identities, name_nodes
from .normalize.fold_bn import fold_batchnorms
from .pipeline import Context, Fixpoint, Pass, PassResult, Pipeline
from .rewrite.flows import drop_identity_gathers, insert_flow_adapters
from .rewrite.remove import remove_units
from .scoring.magnitude import CRITERIA, magnitude_scores
from .select.budget import check_names, parse_ratio
from .select.uniform import select_uniform
from .verify import verify_pruned


class LoadModel(Pass):
    name = "load"
    description = "Load the model (and external data); reject what cannot be handled."

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def run(self, ctx: Context) -> PassResult:
        model = io.load_model(self.path)
        ctx.source, ctx.source_path, ctx.source_ir = model, self.path, model.ir_version
        ctx.graph = import_model(model)
        return PassResult(True, {"nodes": len(model.graph.node), "ir_version": model.ir_version})


class UseModel(Pass):
    name = "use-model"
    description = "Start from an in-memory ModelProto (the Python API's entry)."

    def __init__(self, model: onnx.ModelProto):
        self.model = model

    def run(self, ctx: Context) -> PassResult:
        ctx.source, ctx.source_ir = self.model, self.model.ir_version
        ctx.graph = import_model(self.model)
        return PassResult(True)


class InferShapes(Pass):
    name = "infer-shapes"
    description = "Run ONNX shape inference (with data propagation)."

    def run(self, ctx: Context) -> PassResult:
        ctx.graph = infer_shapes(ctx.require("graph", self.name))
        return PassResult(False)


class NameNodes(Pass):
    name = "name-nodes"
    description = "Give every node a unique name."

    def run(self, ctx: Context) -> PassResult:
        return PassResult(name_nodes(ctx.require("graph", self.name)) > 0)


class FoldConstants(Pass):
    name = "fold-constants"
    description = "Fold constant sub-graphs (shape chains included when shapes are static)."

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        before = len(graph.nodes)
        graph.fold_constants(fold_shapes=True, error_ok=True).cleanup().toposort()
        return PassResult(len(graph.nodes) != before)


class ConstantReshapeTargets(Pass):
    name = "reshape-targets"
    description = "Replace computed Reshape targets (Shape->Slice->Concat) by constants."

    def run(self, ctx: Context) -> PassResult:
        return PassResult(constant_reshape_targets(ctx.require("graph", self.name)) > 0)


class FoldBatchNorm(Pass):
    name = "fold-batchnorm"
    description = "Fold BatchNormalization into the Conv/ConvTranspose/Gemm before it."

    def run(self, ctx: Context) -> PassResult:
        n = fold_batchnorms(ctx.require("graph", self.name))
        return PassResult(n > 0, {"folded": n})


class DropIdentity(Pass):
    name = "drop-identity"
    description = "Remove Identity and inference-mode Dropout nodes."

    def run(self, ctx: Context) -> PassResult:
        return PassResult(drop_identities(ctx.require("graph", self.name)) > 0)


class Cleanup(Pass):
    name = "cleanup"
    description = "Remove dead nodes and tensors; sort topologically."

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        before = (len(graph.nodes), len(graph.tensors()))
        graph.cleanup().toposort()
        return PassResult((len(graph.nodes), len(graph.tensors())) != before)


def Normalize() -> Pipeline:  # noqa: N802 - reads as a pass
    """The normalization pipeline every model goes through before analysis."""
    return Pipeline([
        NameNodes(),
        InferShapes(),
        Fixpoint([FoldConstants(), ConstantReshapeTargets(), FoldBatchNorm(), DropIdentity()]),
        Cleanup(),
        InferShapes(),
    ])


class FindComponents(Pass):
    name = "components"
    description = "Partition the nodes into components (name scopes, a TOML map) and find flows."

    def __init__(self, spec: str = "auto", depth: int | None = None, policy: str = "own"):
        self.spec, self.depth, self.policy = spec, depth, policy

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        ctx.components = find_components(graph, self.spec, self.depth, self.policy)
        ctx.flows = find_flows(graph, ctx.components)
        return PassResult(False, {"components": len(ctx.components.names),
                                  "flows": len(ctx.flows)})


class InsertFlowAdapters(Pass):
    name = "flow-adapters"
    description = "Give components their own channels where an 'own' flow crosses into them."

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        if ctx.components is None or not any(f.policy == "own" for f in ctx.flows):
            return PassResult(False)
        plain = analyze_channels(graph)
        n = insert_flow_adapters(graph, ctx.components, ctx.flows, plain)
        return PassResult(n > 0, {"adapters": n})


class DropAdapters(Pass):
    name = "drop-adapters"
    description = "Remove flow adapters that ended up selecting every channel."

    def run(self, ctx: Context) -> PassResult:
        return PassResult(drop_identity_gathers(ctx.require("graph", self.name)) > 0)


class AnalyzeChannels(Pass):
    name = "analyze"
    description = "Find coupled channel groups with the op-rule registry."

    def __init__(self, exclude: Sequence[str] = ()):
        self.exclude = list(exclude)

    def run(self, ctx: Context) -> PassResult:
        freeze, comp_of = {}, None
        if ctx.components is not None:
            comp_of = ctx.components.of_node
            freeze = {f.tensor: f"flow {f.tensor} ({f.src} -> {', '.join(f.dst)}) is frozen"
                      for f in ctx.flows if f.policy == "freeze"}
        ctx.analysis = analyze_channels(ctx.require("graph", self.name), exclude=self.exclude,
                                        freeze=freeze, component_of=comp_of)
        groups = ctx.analysis.groups
        return PassResult(False, {
            "groups": len(groups), "prunable": len(ctx.analysis.prunable_groups()),
        })


class ScoreMagnitude(Pass):
    name = "score"
    description = "Importance per channel: L1/L2 norm of its parameter slices over the group."

    def __init__(self, criterion: str = "l2"):
        if criterion not in CRITERIA:
            raise UsageError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
        self.criterion = criterion

    def run(self, ctx: Context) -> PassResult:
        analysis = ctx.require("analysis", self.name)
        ctx.scores = magnitude_scores(ctx.graph, analysis, self.criterion)
        return PassResult(False)


class SelectUniform(Pass):
    name = "select"
    description = "Remove the same fraction of channels from every prunable group."

    def __init__(self, ratio: float | str | dict = 0.5, round_to: int = 1, min_width: int = 1):
        self.ratio = parse_ratio(ratio)
        if round_to < 1 or min_width < 1:
            raise UsageError("--round-to and the minimum width must be >= 1")
        self.round_to, self.min_width = round_to, min_width

    def run(self, ctx: Context) -> PassResult:
        analysis = ctx.require("analysis", self.name)
        names = ctx.components.names if ctx.components is not None else ()
        check_names(self.ratio, names)
        scores = ctx.scores if ctx.scores is not None else np.zeros(analysis.num_units)
        ctx.plan = select_uniform(analysis, scores, self.ratio, self.round_to, self.min_width)
        return PassResult(False, {"removed_units": ctx.plan.removed_units})


class RemoveChannels(Pass):
    name = "remove"
    description = "Slice parameters, fix attributes and shapes of the selected channels."

    def run(self, ctx: Context) -> PassResult:
        graph, analysis = ctx.require("graph", self.name), ctx.require("analysis", self.name)
        plan = ctx.require("plan", self.name)
        ctx.reference = graph.copy()  # shares the weights; removal assigns new arrays
        removed = remove_units(graph, analysis, plan.removed)
        return PassResult(plan.removed_units > 0, {"params_removed": removed})


class Verify(Pass):
    name = "verify"
    description = "Checker, onnxruntime on each provider, and the mask oracle; fail loudly."

    def __init__(self, providers: Sequence[str] = ("CPUExecutionProvider",), seed: int = 0,
                 compare_input: bool = True, shapes: dict | None = None):
        self.providers, self.seed = list(providers), seed
        self.compare_input, self.shapes = compare_input, shapes

    def run(self, ctx: Context) -> PassResult:
        graph, analysis = ctx.require("graph", self.name), ctx.require("analysis", self.name)
        reference = export_model(ctx.require("reference", self.name))
        plan = ctx.require("plan", self.name)
        pruned = export_model(graph, io.runtime_ir_version(export_model(graph), ctx.source_ir))
        report = verify_pruned(
            pruned, reference, analysis, plan.removed,
            source=ctx.source if self.compare_input else None,
            providers=self.providers, seed=self.seed, shapes=self.shapes,
        )
        ctx.verification = report
        if not report.passed:
            raise VerificationError("verification failed: " + "; ".join(report.messages))
        return PassResult(False, {"max_abs_diff": report.max_abs_diff})


class WriteModel(Pass):
    name = "write"
    description = "Write the verified model atomically (never over the input unless forced)."

    def __init__(self, path: str | Path, force: bool = False):
        self.path, self.force = Path(path), force

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        if ctx.source_path is not None and _same_file(ctx.source_path, self.path) and not self.force:
            raise OutputError(f"{self.path}: refusing to overwrite the input model (use --force)")
        if ctx.verification is None or not ctx.verification.passed:
            raise OutputError("refusing to write a model that has not passed verification")
        model = export_model(graph)
        ctx.output_path = io.save_model(model, self.path, source_ir=ctx.source_ir)
        return PassResult(False, {"path": str(ctx.output_path)})


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
