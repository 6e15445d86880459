"""Where a pipeline starts: a model file or an in-memory ModelProto."""

from __future__ import annotations

import onnx

from ..analysis.size import graph_params
from ..ir import io
from ..ir.graph import import_model
from ..ir.runtime import skeleton
from ..ir.weights import Skeleton
from ..options import Option
from ..options import path as path_option
from .base import Context, Pass, PassResult


class LoadModel(Pass):
    name = "load"
    description = "Load the model (and external data); reject what cannot be handled."
    provides = ("graph", "source")
    uses = ("source_ir", "source_params", "source_path")
    options = (Option("path", help="the .onnx file (never modified)", parse=path_option,
                      type_name="path"),)

    def preflight(self, ctx: Context) -> None:
        io.check_input(self.path)
        ctx.source_path = self.path

    def run(self, ctx: Context) -> PassResult:
        # the weights as arrays (external data memory-mapped), which the graph shares
        ctx.source = io.load_skeleton(self.path)
        model = ctx.source.model
        ctx.source_path, ctx.source_ir = self.path, model.ir_version
        ctx.graph = import_model(ctx.source)
        ctx.source_params = graph_params(ctx.graph)
        return PassResult(True, {"nodes": len(model.graph.node), "ir_version": model.ir_version})


def _model_proto(value):
    if not isinstance(value, onnx.ModelProto):
        raise ValueError(f"expected an onnx.ModelProto, got {type(value).__name__}")
    return value


class UseModel(Pass):
    name = "use-model"
    description = "Start from an in-memory ModelProto (the Python API's entry)."
    provides = ("graph", "source")
    uses = ("source_ir", "source_params")
    options = (Option("model", help="an onnx.ModelProto", parse=_model_proto,
                      type_name="ModelProto"),)

    def run(self, ctx: Context) -> PassResult:
        # the caller's model stays as it is: its weights are copied into arrays once
        ctx.source, ctx.source_ir = Skeleton(*skeleton(self.model)), self.model.ir_version
        ctx.graph = import_model(ctx.source)
        ctx.source_params = graph_params(ctx.graph)
        return PassResult(True)
