"""Recovery passes: refit weights after removal (compensation, distillation), then check the
recovered model (the oracle no longer applies to refit weights: checker, onnxruntime, finite
outputs, and the application metric against the original)."""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from ..errors import UsageError, VerificationError
from ..ir.graph import export_model
from ..ir.runtime import run_batched, session
from ..recover.compensate import compensate
from ..search.quality import get_metric
from ..verify.checks import VerifyReport
from .core import Context, Pass, PassResult


def _need_calib(ctx: Context, by: str) -> dict:
    if ctx.calib is None:
        raise UsageError(f"{by} needs calibration data: --calib FILE.npz or --calib-random N")
    return ctx.calib


class Compensate(Pass):
    name = "compensate"
    description = "Refit layers that lost inputs to reproduce the original (ridge least squares)."
    requires = ("analysis", "plan", "reference", "calib")

    def __init__(self, ridge: float = 1e-3):
        if ridge < 0:
            raise UsageError("--ridge must be >= 0")
        self.ridge = ridge

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        reference = export_model(ctx.require("reference", self.name))
        calib = _need_calib(ctx, "--compensate")
        fits = compensate(graph, reference, ctx.analysis, ctx.plan.removed, calib, self.ridge)
        ctx.recovery.setdefault("compensate", [
            {"layer": f.node, "rows": f.rows, "error_before": f.error_before,
             "error_after": f.error_after} for f in fits])
        return PassResult(bool(fits), {"layers": len(fits)})


class Distill(Pass):
    name = "distill"
    description = "Fine-tune the pruned model's weights on the original's outputs (torch)."
    requires = ("reference", "calib")

    def __init__(self, steps: int = 300, lr: float = 1e-3, batch_size: int = 32,
                 val_fraction: float = 0.2, patience: int = 5, boundaries: bool = False,
                 seed: int = 0):
        if steps < 1 or lr <= 0 or batch_size < 1 or not 0 < val_fraction < 1:
            raise UsageError("distillation needs steps >= 1, lr > 0, batch >= 1, 0 < val < 1")
        self.steps, self.lr, self.batch_size = steps, lr, batch_size
        self.val_fraction, self.patience, self.boundaries, self.seed = (
            val_fraction, patience, boundaries, seed)

    def needs(self) -> set[str]:
        return set(self.requires) | ({"flows"} if self.boundaries else set())

    def run(self, ctx: Context) -> PassResult:
        try:
            from ..recover.distill import distill
        except ImportError as err:
            raise UsageError(f"--recover distill needs torch (pip install onnxprune[torch]): "
                             f"{err}") from None
        graph = ctx.require("graph", self.name)
        calib = _need_calib(ctx, "--recover distill")
        teacher = export_model(ctx.require("reference", self.name))
        bounds = [f.tensor for f in (ctx.flows or [])] if self.boundaries else []
        student = export_model(graph)
        sign = 1.0 if ctx.metric is None or ctx.metric.higher_is_better else -1.0
        tries = []
        for lr in (self.lr, self.lr / 10, self.lr / 100):  # back off when nothing improves
            model, info = distill(student, teacher, calib, metric=ctx.metric,
                                  steps=self.steps, lr=lr, batch_size=self.batch_size,
                                  val_fraction=self.val_fraction, patience=self.patience,
                                  boundaries=bounds, seed=self.seed)
            info["lr"] = lr
            tries.append((sign * (info["val_after"] - info["val_before"]), model, info))
            if tries[-1][0] > 0 and info["stopped"] != "diverged":
                break
        _, model, info = max(tries, key=lambda t: t[0])
        info["tries"] = len(tries)
        tensors = graph.tensors()
        for init in model.graph.initializer:
            t = tensors.get(init.name)
            if t is not None:
                t.values = numpy_helper.to_array(init)
        ctx.recovery["distill"] = {k: v for k, v in info.items() if k != "history"}
        return PassResult(True, {"steps": info.get("steps")})


class VerifyRecovered(Pass):
    name = "verify-recovered"
    description = "After refitting: checker, onnxruntime, finite outputs, metric vs original."
    requires = ("reference", "verification")

    def __init__(self, providers=("CPUExecutionProvider",)):
        self.providers = list(providers)

    def run(self, ctx: Context) -> PassResult:
        import onnx

        graph = ctx.require("graph", self.name)
        model = export_model(graph)
        messages = []
        try:
            onnx.checker.check_model(model, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
            raise VerificationError(f"recovered model fails onnx.checker: {err}") from None
        calib = ctx.calib
        feeds = {i.name: calib[i.name] for i in model.graph.input} if calib else None
        if feeds is None:
            from ..ir.runtime import random_feeds

            feeds = random_feeds(model)
        outs = None
        for provider in self.providers:
            outs = run_batched(session(model, [provider]), feeds)
        if not all(np.all(np.isfinite(o)) for o in outs):
            raise VerificationError("recovered model produces non-finite outputs")
        reference = run_batched(session(export_model(ctx.reference)), feeds)
        metric = ctx.metric or get_metric("cosine")
        if calib is not None and not metric.on_model:
            value = metric(outs, calib, reference)
            ctx.quality = {**(ctx.quality or {"metric": metric.name}), "after_recovery": value}
            messages.append(f"{metric.name} after recovery: {value:.4g}")
        old = ctx.verification
        ctx.verification = VerifyReport(
            True, tuple(self.providers), old.max_abs_diff if old else float("nan"),
            old.max_rel_diff if old else float("nan"), None, True,
            tuple((old.messages if old else ()) + tuple(messages)), oracle=bool(old and old.oracle))
        return PassResult(False, {"messages": messages})
