"""Quantize after pruning: the verified (and recovered) float model is quantized to int8 by
onnxruntime's static quantizer, calibrated on the run's calibration data, and checked against
the float model before it replaces it.

The check: ``onnx.checker`` (full), an onnxruntime session on every provider (optimizations
on, the integer kernels fused as deployed) with finite outputs, and the application metric.
The metric is measured as a stage (``quantize``) on the calibration data and the held-out
share; it decides on the held-out share (the calibration data without one). When it is worse
than the float model's by more than the tolerance, the run fails and nothing is written: a
model asked for in int8 is never silently written in float.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import onnx

from ...analysis.size import param_bytes, params_by_type
from ...errors import UnsupportedModelError, UsageError, VerificationError, first_line
from ...ir import io
from ...ir.arrays import Calibration, axes_of
from ...ir.graph import import_model, infer_shapes
from ...ir.quant import is_quantized
from ...ir.runtime import run_batched, session, weightless
from ...options import Option, flag, number
from ...quant.static import (
    METHODS,
    TYPES,
    QuantSettings,
    calibrated_samples,
    cpu_lacks_vnni,
    quantize_int8,
)
from ...quant.weight_only import quantize_int4
from ...search.quality import Metric, cosine, get_metric
from ..base import Context, Pass, PassResult
from ..support import stages
from ..support.inputs import verification_feeds

# How much worse than the float model the int8 one may be, per metric: (amount, relative to
# the float model's value?, how it reads). Metrics of your own: 2% of the float value.
TOLERANCES: dict[str, tuple[float, bool, str]] = {
    "psnr": (1.0, False, "1 dB"),
    "accuracy": (0.01, False, "0.01 (one point)"),
    "cosine": (0.01, False, "0.01"),
    "kl": (0.01, False, "0.01 nats"),
    "mse": (0.26, True, "1.26x the float mse (1 dB)"),
}
OWN_TOLERANCE = (0.02, True, "2 percent of the float value")


def allowed_loss(metric: Metric, float_value: float, tolerance: float | None) -> tuple[float, str]:
    """The metric loss the int8 model may show (in the metric's units) and how to say it."""
    if tolerance is not None:
        return tolerance, f"{tolerance:g}"
    amount, relative, text = TOLERANCES.get(metric.name, OWN_TOLERANCE)
    return (amount * abs(float_value) if relative else amount), text


def _reduce_range(value) -> str:
    """on / off / auto, from those words or a bool (the API's True and False)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    word = str(value).strip().lower()
    if word in ("auto", "on", "off"):
        return word
    if word in ("true", "yes", "1", "false", "no", "0"):
        return "on" if word in ("true", "yes", "1") else "off"
    raise ValueError(f"auto, on or off, got {value!r}")


class Quantize(Pass):
    name = "quantize"
    description = ("Quantization by onnxruntime's quantizers: static int8 (QDQ, per-channel "
                   "weights, calibrated on the calibration data) or weight-only int4 "
                   "(MatMulNBits blocks); checked against the float model.")
    requires = ("graph", "verification", "calib")
    provides = ("quantization",)
    uses = ("depth", "float_graph", "heldout", "interface", "metric", "source_ir")

    options = (
        Option("type", "int8", "int8: static, weights and activations (QDQ); int4: "
               "weight-only, MatMul weights in 4-bit blocks (MatMulNBits, what onnxruntime "
               "GenAI runs)", choices=("int8", "int4"), type_name="str"),
        Option("block_size", 32, "int4: input rows per block of a weight (one scale each)",
               parse=number(16, integer=True), public="quantize_block_size", metavar="N",
               type_name="int"),
        Option("activations", "uint8", "element type of quantized activations (uint8: what "
               "onnxruntime recommends on x86 CPUs; int8: ARM, GPUs)", choices=TYPES,
               public="quantize_activations"),
        Option("per_tensor", False, "one scale per weight tensor instead of one per output "
               "channel", parse=flag, public="quantize_per_tensor", kind="switch",
               type_name="bool"),
        Option("method", "minmax", "how activation ranges are calibrated", choices=METHODS,
               public="quantize_method"),
        Option("reduce_range", "auto", "7-bit weights, for CPUs without VNNI, where 8-bit "
               "products can saturate: on, off, or auto: on when this machine is an x86 CPU "
               "without VNNI, as onnxruntime advises (the model is for the CPU it will run "
               "on: say on or off when that is another one); the flag alone means on",
               parse=_reduce_range, public="quantize_reduce_range", metavar="auto|on|off",
               bare="on", type_name="str"),
        Option("tolerance", None, "how much worse than the float model the int8 model's metric "
               "may be, in the metric's units (default: psnr 1 dB, accuracy, cosine and kl 0.01, "
               "mse 1.26x the float mse, a metric of your own 2 percent of its value); worse "
               "fails the run and nothing is written", parse=number(0), public="quantize_tolerance", metavar="T",
               type_name="float"),
        Option("batch_size", 16, "calibration samples per onnxruntime run",
               parse=number(1, integer=True), type_name="int"),
        Option("seed", 0, "seed of the check's random inputs (no calibration input left)",
               parse=number(0, integer=True), type_name="int"),
    )

    def settings(self) -> QuantSettings:
        return QuantSettings(activations=self.activations, per_channel=not self.per_tensor,
                             method=self.method,
                             reduce_range=(cpu_lacks_vnni() if self.reduce_range == "auto"
                                           else self.reduce_range == "on"),
                             batch=self.batch_size)

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        calib = ctx.calib
        if calib is None:
            raise UsageError("quantization needs calibration data: --calib FILE.npz or "
                             "--calib-random N")
        if ctx.interface or (ctx.depth and ctx.depth.get("cache")):
            raise UsageError("quantization does not support a model whose cache interface "
                             "changed (--prune-kv-cache); run it without one of them")
        if is_quantized(graph):
            raise UsageError("the model is quantized already (QuantizeLinear/DequantizeLinear "
                             "or integer kernels); it is pruned as it is, without --quantize")
        settings = self.settings()
        source = ctx.export(graph)
        source.ir_version = io.runtime_ir_version(source, ctx.source_ir)
        try:
            quantized = (quantize_int4(source, self.block_size) if self.type == "int4"
                         else quantize_int8(source, calib, settings))
        except (UsageError, UnsupportedModelError):
            raise
        except Exception as err:  # noqa: BLE001 - the quantizer's own failures
            raise UnsupportedModelError(f"onnxruntime's quantizer failed on the pruned model: "
                                        f"{type(err).__name__}: {first_line(err)}") from None
        qgraph = infer_shapes(import_model(quantized))  # the quantizer keeps no value_info
        qmodel = ctx.export(qgraph)
        qmodel.ir_version = io.runtime_ir_version(qmodel, ctx.source_ir)
        providers = self._check_runs(ctx, qmodel)
        figures = self._check_metric(ctx, graph, qgraph, source, qmodel)
        float_types, int8_types = params_by_type(graph), params_by_type(qgraph)
        int4 = self.type == "int4"
        info: dict[str, Any] = {
            "type": self.type,
            "settings": (f"weight-only MatMulNBits, blocks of {self.block_size}, symmetric"
                         if int4 else settings.describe()),
            "reduce_range": None if int4 else
            f"{self.reduce_range}: {'on' if settings.reduce_range else 'off'}",
            "calibration_samples": 0 if int4 else calibrated_samples(source, calib, settings),
            "providers": providers, "checker": True, **figures,
            "params_by_type_float": float_types, "params_by_type": int8_types,
            "weight_bytes_float": param_bytes(float_types),
            "weight_bytes": param_bytes(int8_types),
            "quantized_nodes": sum(n.op == ("MatMulNBits" if int4 else "QuantizeLinear")
                                   for n in qgraph.nodes),
        }
        ctx.quantization = info
        ctx.float_graph, ctx.graph = graph, qgraph
        if ctx.verification is not None:
            ctx.verification = replace(ctx.verification,
                                       messages=(*ctx.verification.messages, summary_line(info)))
        return PassResult(True, {k: info[k] for k in ("settings", "metric", "float", self.type)
                                 if k in info})

    def _check_runs(self, ctx: Context, model: onnx.ModelProto) -> list[str]:
        try:
            onnx.checker.check_model(weightless(model), full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
            raise VerificationError(f"the quantized model fails onnx.checker: "
                                    f"{str(err).splitlines()[0]}") from None
        feeds = _feeds(ctx, model, self.seed)
        ran = []
        for provider in ctx.config.providers:
            try:
                outs = run_batched(session(model, [provider], optimized=True), feeds,
                                   axes=axes_of(feeds))
            except Exception as err:  # noqa: BLE001 - onnxruntime's errors
                if not type(err).__module__.startswith("onnxruntime"):
                    raise
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                raise VerificationError(f"the quantized model does not run on {provider}: "
                                        f"{first}") from None
            if not all(np.all(np.isfinite(o)) for o in outs if np.issubdtype(o.dtype, np.floating)):
                raise VerificationError(f"the quantized model produces non-finite outputs on "
                                        f"{provider}")
            ran.append(provider)
        return ran

    def _check_metric(self, ctx: Context, graph, qgraph, source: onnx.ModelProto,
                      qmodel: onnx.ModelProto) -> dict[str, Any]:
        metric = ctx.metric or get_metric("cosine")
        if stages.measurable(ctx):
            before = stages.current(ctx)  # the float model's figures, measured once
            after = stages.measure(ctx, self.name, qgraph, optimized=True)
            key = "heldout" if "heldout" in after else "calib"
            was, now = before[key], after[key]
            where = "held-out" if key == "heldout" else "calibration"
            data = ctx.heldout if key == "heldout" else ctx.calib
            samples = data.samples
            # and how closely the int8 model follows the float one, output by output
            agreement = cosine(stages.outputs(ctx, qgraph, data, optimized=True), data,
                               stages.outputs(ctx, graph, data))
        else:  # a metric that runs the model itself: on each model directly
            was, now = model_metric(metric, source), model_metric(metric, qmodel, True)
            where, samples, agreement = "model", None, None
        loss = metric.utility(was) - metric.utility(now)
        allowed, text = allowed_loss(metric, was, self.tolerance)
        figures = {"metric": metric.name, "data": where, "samples": samples, "float": was,
                   self.type: now, "quantized": now, "loss": loss, "tolerance": allowed, "tolerance_text": text,
                   "agreement": agreement}
        if not loss <= allowed:  # NaN fails too
            on = f" on {samples} {where} samples" if samples else ""
            raise VerificationError(
                f"{self.type} quantization makes {metric.name}{on} {now:.4g} against the float "
                f"model's {was:.4g}: worse by {loss:.4g}, more than the tolerance {text}; "
                "nothing written (a larger --quantize-tolerance, --quantize-method entropy or "
                "percentile, or no --quantize)")
        return figures


def _feeds(ctx: Context, model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    """A few calibration samples to run the check on (random ones when none is left)."""
    calib = ctx.calib
    names = {i.name for i in model.graph.input}
    if calib is not None and calib.samples:
        part = calib.take(np.arange(min(calib.samples, 8)))
        return Calibration({k: v for k, v in part.items() if k in names},
                           {k: a for k, a in part.axes.items() if k in names})
    return verification_feeds(ctx, model, count=1, seed=seed)[0]


def model_metric(metric: Metric, model: onnx.ModelProto, optimized: bool = False) -> float:
    """A metric that judges the model itself: on a session of it, or on the model."""
    if metric.on_model == "model":
        return metric.value_of(metric.fn, model)
    sess = session(model, optimized=optimized)
    return metric.value_of(metric.fn, lambda feeds: sess.run(None, feeds))


def summary_line(info: dict[str, Any]) -> str:
    """One line for the report: what was quantized and how its metric compares."""
    on = (f" on {info['samples']} {info['data']} samples" if info.get("samples")
          else "")
    kind = info.get("type", "int8")
    calibrated = (f"; calibrated on {info['calibration_samples']} samples"
                  if info.get("calibration_samples") else "")
    return (f"quantized to {kind} ({info['settings']}{calibrated}): {info['metric']}{on} "
            f"{info['float']:.4g} (float) -> {info['quantized']:.4g} ({kind}), tolerance "
            f"{info['tolerance_text']}"
            + (f"; cosine with the float model {info['agreement']:.4f}"
               if info.get("agreement") is not None else "")
            + f"; checker ok, onnxruntime {', '.join(info['providers'])}")
