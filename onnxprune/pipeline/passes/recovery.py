"""Recovery passes: refit weights after removal (compensation, distillation), then check the
recovered model (the oracle no longer applies to refit weights: checker, onnxruntime, finite
outputs, and the application metric against the original)."""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from ...analysis.blocks import layers_reading
from ...errors import UsageError, VerificationError, warn
from ...ir.arrays import Calibration, axes_of
from ...ir.quant import is_quantized
from ...ir.runtime import run_batched, session, weightless
from ...ir.weights import proto
from ...options import Option, auto_or_count, flag, number
from ...recover.compensate import RIDGE, compensate
from ...search.memory import rows_for, search_budget
from ...search.quality import get_metric
from ...verify.checks import VerifyReport, cut_arrays, cut_outputs
from ..base import Context, Pass, PassResult
from ..support import stages
from ..support.augment import augmented
from ..support.inputs import verification_feeds

# Copies of the calibration data in other styles the refit fits by default: none. For a token
# model the random-token probe judges the refit, and copies with random tokens are its own
# construction: a refit fitted on them reads better on the probe by construction (MiniLM at
# 30%, the factorized search: the probe 0.933 -> 0.938, kept, where held-out sentences read
# 0.905 -> 0.891; fitted on the calibration sentences alone the probe reads 0.811 and undoes it,
# and distillation of the plain cut reads 0.92 on sentences of other topics).
AUTO_COPIES = 0


def _device(value) -> str:
    """A training device: auto, cpu, cuda or cuda:N (whether it exists is known at run time,
    where torch is imported)."""
    text = str(value).strip().lower()
    head, _, index = text.partition(":")
    if text in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit()):
        return text
    raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {value!r}")


def _gpu_by_default(device: str) -> bool:
    """``auto`` chose a GPU (torch sees one): a failure there other than memory may train on
    the CPU instead. A device named by the user is where it trains or fails."""
    from ...recover.train_device import resolve

    return device == "auto" and resolve(device).type == "cuda"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _not_distilled(ctx: Context, why: str) -> PassResult:
    warn(f"distill: not run ({why}); the model stays as the earlier stages left it")
    ctx.recovery["distill"] = {"skipped": why}
    return PassResult(False, {"skipped": why})


def _float_only(ctx: Context, by: str) -> None:
    """Refits write float weights: a quantized model (integer weights) is not refit."""
    if ctx.graph is not None and is_quantized(ctx.graph):
        raise UsageError(f"{by} refits float weights and this model is quantized; prune the "
                         "float model with it and quantize after (--quantize int8)")


def _same_interface(ctx: Context, by: str) -> None:
    """Distillation and quantization feed the pruned model the original's data as it is."""
    if ctx.interface or (ctx.depth and ctx.depth.get("cache")):
        raise UsageError(f"{by} does not support a model whose cache interface changed "
                         "(--prune-kv-cache); run it without one of them")


def _need_calib(ctx: Context, by: str) -> dict:
    if ctx.calib is None:
        raise UsageError(f"{by} needs calibration data: --calib FILE.npz or --calib-random N")
    return ctx.calib


class Compensate(Pass):
    name = "compensate"
    description = "Refit layers that lost inputs to reproduce the original (ridge least squares)."
    requires = ("analysis", "plan", "reference", "calib")
    uses = ("depth", "factors", "graph", "interface", "probe", "recovery")

    options = (
        Option("ridge", RIDGE, "ridge regularisation of the refit, relative to the mean input "
               "energy", parse=number(0), public="compensate_ridge", aliases=("ridge",),
               metavar="R", type_name="float"),
        Option("augment", "auto", "fit the refit also on N copies of the calibration data in "
               "other styles, so that it reproduces the original beyond the calibration data's "
               "style: for a model that reads token ids its content tokens replaced by random "
               "ids (the random-token probe's construction, other seeds), for one that reads "
               "images restyled (strokes, slant, width, contrast, blur, noise); auto: none (with "
               "random-token copies the random-token probe no longer judges the refit on "
               "text it did not fit)", parse=auto_or_count(0), public="compensate_augment",
               metavar="N|auto", type_name="int|auto"),
    )

    def copies(self, ctx: Context) -> int:
        """Copies in other styles the refit fits on (0: the calibration data alone)."""
        if self.augment != "auto":
            return int(self.augment)
        return AUTO_COPIES

    @staticmethod
    def _graph(ctx: Context):
        return ctx.reference if ctx.reference is not None else ctx.graph

    def fit_data(self, ctx: Context) -> Calibration:
        """What the refit fits on: the calibration data (its fitted share), with the copies."""
        return self._fit_data(ctx)[0]

    def _fit_data(self, ctx: Context) -> tuple[Calibration, str | None]:
        """(the data, the copies' style; None: no copies)."""
        calib = _need_calib(ctx, self.name)
        n = self.copies(ctx)
        data = calib if isinstance(calib, Calibration) else Calibration(calib, axes_of(calib))
        more = augmented(self._graph(ctx), data, n) if n else None
        return more if more is not None else (calib, None)

    def run(self, ctx: Context) -> PassResult:
        graph = ctx.require("graph", self.name)
        _float_only(ctx, self.name)
        reference = ctx.skeleton(ctx.require("reference", self.name))
        calib, style = self._fit_data(ctx)
        if style == "random tokens" and ctx.probe is not None:
            warn("compensate_augment: the refit fits random-token copies, the random-token "
                 "probe's own construction; the probe no longer judges it on text it did not "
                 "fit (the held-out share and the probe can both read higher while other text "
                 "reads lower)")
        before, snapshot = stages.current(ctx), graph.copy()  # the copy shares the weights
        also = [n.name for n in layers_reading(graph, set(ctx.depth["readers"]))] if (
            ctx.depth and ctx.depth["removed"]) else []
        fits = compensate(graph, reference, ctx.analysis, ctx.plan.removed, calib, self.ridge,
                          interface=ctx.interface, also=also,
                          skip=[f.node for f in ctx.factors or ()])
        ctx.recovery["compensate"] = [
            {"layer": f.node, "rows": f.rows, "error_before": f.error_before,
             "error_after": f.error_after} for f in fits]
        if style is not None:
            ctx.recovery["compensate_data"] = {"samples": Calibration(
                calib, axes_of(calib)).samples, "copies": self.copies(ctx), "style": style}
        kept = stages.keep_better(ctx, self.name, before, snapshot) if fits else True
        return PassResult(bool(fits) and kept, {"layers": len(fits), "kept": kept})


class Distill(Pass):
    name = "distill"
    description = "Fine-tune the pruned model's weights on the original's outputs (torch)."
    requires = ("reference", "calib")
    uses = ("flows", "graph", "interface", "metric", "recovery")

    options = (
        Option("steps", 300, "optimizer steps at most", parse=number(1, integer=True),
               public="distill_steps", metavar="N", type_name="int"),
        Option("lr", 1e-3, "learning rate (backs off tenfold, twice, when nothing improves)",
               parse=number(0, lo_open=True), public="distill_lr", metavar="LR",
               type_name="float"),
        Option("batch_size", 32, "mini-batch size", parse=number(1, integer=True),
               public="distill_batch", metavar="B", type_name="int"),
        Option("val_fraction", 0.2, "share of the calibration data held out for validation on "
               "the metric and early stopping", parse=number(0, 1, lo_open=True, hi_open=True),
               public="distill_val", metavar="F", type_name="float"),
        Option("patience", 10, "validations (once an epoch, at most 20 steps apart) without "
               "improvement before stopping",
               parse=number(1, integer=True), public="distill_patience", metavar="N",
               type_name="int"),
        Option("boundaries", False, "also match the activations at component boundaries "
               "(needs components)", parse=flag, public="distill_boundaries", kind="switch",
               type_name="bool"),
        Option("seed", 0, "seed of the split and the mini-batches", parse=number(0, integer=True),
               type_name="int"),
        Option("loss", "auto", "what the student matches: mse (outputs, normalized by their "
               "variance), kl (the distribution over the last axis of the outputs: their "
               "softmax, or the outputs themselves when they are probabilities), or auto "
               "(kl for the perplexity and kl metrics, else mse)", choices=("auto", "mse", "kl"),
               public="distill_loss", type_name="str"),
        Option("device", "auto", "where the student trains: auto (a CUDA GPU when torch sees "
               "one, else the CPU), cpu or cuda (cuda:N for another GPU); the teacher's outputs "
               "come from onnxruntime as before", parse=_device, public="distill_device",
               metavar="auto|cpu|cuda", type_name="str"),
        Option("precision", "fp32", "a training step's arithmetic: fp32, or bf16 (torch's "
               "autocast: products in bfloat16, weights, gradients and losses in float32; where "
               "the device has bfloat16 arithmetic: a GPU of compute capability 8 or more, a CPU "
               "with AVX512-BF16 or AMX, else fp32 with a warning)", choices=("fp32", "bf16"),
               public="distill_precision", type_name="str"),
    )

    def loss_for(self, metric) -> str:
        if self.loss != "auto":
            return self.loss
        return "kl" if metric is not None and metric.name in ("perplexity", "kl") else "mse"

    def needs(self) -> set[str]:
        return set(self.requires) | ({"flows"} if self.boundaries else set())

    def preflight(self, ctx: Context) -> None:
        """A GPU named where torch sees none fails before any work."""
        if self.device in ("auto", "cpu"):
            return
        try:
            from ...recover.train_device import resolve
        except ImportError:  # the run says what to install
            return
        resolve(self.device)

    def run(self, ctx: Context) -> PassResult:
        try:
            from ...recover.distill import distill
            from ...recover.train_device import OutOfMemory
        except ImportError as err:
            raise UsageError(f"distillation needs torch (pip install 'onnxprune[torch]'): "
                             f"{err}") from None
        graph = ctx.require("graph", self.name)
        _float_only(ctx, self.name)
        calib = _need_calib(ctx, self.name)
        teacher = ctx.export(ctx.require("reference", self.name))
        bounds = [f.tensor for f in (ctx.flows or [])] if self.boundaries else []
        student = ctx.export(graph)
        before, snapshot = stages.current(ctx), graph.copy()
        args = dict(metric=ctx.metric, steps=self.steps,
                    lr=(self.lr, self.lr / 10, self.lr / 100),  # back off when nothing improves
                    batch_size=self.batch_size, val_fraction=self.val_fraction,
                    patience=self.patience, boundaries=bounds, seed=self.seed,
                    loss=self.loss_for(ctx.metric), interface=ctx.interface,
                    reads=stages.reads(ctx), guard=stages.probe(ctx),
                    teacher_outputs=stages.held_outputs(ctx, ctx.reference),
                    precision=self.precision)
        try:
            try:
                model, info = distill(student, teacher, calib, device=self.device, **args)
            except RuntimeError as err:  # a GPU chosen by default that cannot train this model
                if isinstance(err, (NotImplementedError, OutOfMemory)) or \
                        not _gpu_by_default(self.device):
                    raise
                warn(f"distill: training on the GPU failed ({_first_line(err)}); training on "
                     "the CPU instead (--distill-device cpu chooses it from the start)")
                model, info = distill(student, teacher, calib, device="cpu", **args)
        except NotImplementedError as err:  # an op the training interpreter lacks
            return _not_distilled(ctx, f"{err}; the training interpreter lacks it")
        except OutOfMemory as err:  # training on a GPU too small for it
            return _not_distilled(ctx, f"the GPU ran out of memory: {_first_line(err)}")
        if info["stopped"] == "memory":
            room = f"the {info['device']} GPU has free" if info["device"].startswith("cuda") \
                else f"--memory {ctx.config.memory / 2**20:.0f}M leaves"
            warn(f"distill: one training sample needs more memory than {room}; not trained")
        tensors = graph.tensors()
        for init in model.graph.initializer:
            t = tensors.get(init.name)
            if t is not None:
                t.values = numpy_helper.to_array(init)
        ctx.recovery["distill"] = {k: v for k, v in info.items() if k != "history"}
        kept = stages.keep_better(ctx, self.name, before, snapshot)
        ctx.recovery["distill"]["kept"] = kept
        return PassResult(kept, {"steps": info.get("steps"), "kept": kept})


def _inputs_of(model, data) -> Calibration:
    """``data`` as ``model`` takes it: the arrays of its inputs (with their batch axes)."""
    names = {i.name for i in proto(model).graph.input}
    axes = axes_of(data)
    return Calibration({k: v for k, v in data.items() if k in names},
                       {k: a for k, a in axes.items() if k in names})


class VerifyRecovered(Pass):
    name = "verify-recovered"
    description = "After refitting: checker, onnxruntime, finite outputs, metric vs original."
    requires = ("reference", "verification")
    uses = ("calib", "graph", "interface", "metric", "quality")

    def run(self, ctx: Context) -> PassResult:
        import onnx

        graph = ctx.require("graph", self.name)
        model = ctx.skeleton(graph)  # the graph's arrays: nothing serialized or copied
        messages = []
        try:
            onnx.checker.check_model(weightless(model), full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
            raise VerificationError(f"recovered model fails onnx.checker: {err}") from None
        original = ctx.skeleton(ctx.reference)
        calib = ctx.calib
        ref_feeds = _inputs_of(original, calib) if calib else verification_feeds(
            ctx, original, count=1)[0]
        feeds = _inputs_of(model, ref_feeds)  # a cache pair may have left with its block
        outs = None
        providers = list(ctx.config.providers)
        rows = rows_for(model, feeds, axes_of(feeds), search_budget())
        cuts = ctx.interface or {}  # an opened cache: the pruned model takes the kept heads
        for provider in providers:
            outs = run_batched(session(model, [provider]), cut_arrays(feeds, cuts),
                               axes=axes_of(feeds), max_rows=rows)
        if not all(np.all(np.isfinite(o)) for o in outs):
            raise VerificationError("recovered model produces non-finite outputs")
        reference = run_batched(session(original), ref_feeds, axes=axes_of(ref_feeds),
                                max_rows=rows)
        names = [o.name for o in proto(model).graph.output]
        reference = cut_outputs(reference, names, cuts,
                                [o.name for o in proto(original).graph.output])
        metric = ctx.metric or get_metric("cosine")
        if calib is not None and not metric.on_model:
            read = stages.reads(ctx)
            value = metric(stages.reading(outs, names, read), cut_arrays(calib, cuts),
                           stages.reading(reference, names, read))
            ctx.quality = {**(ctx.quality or {"metric": metric.name}), "after_recovery": value}
            messages.append(f"{metric.name} after recovery: {value:.4g}")
        old = ctx.verification
        ctx.verification = VerifyReport(  # the removal's oracle figures, where they ran
            True, tuple(providers), old.max_abs_diff if old else float("nan"),
            old.max_rel_diff if old else float("nan"), old.normalize_rel_diff if old else None,
            True, tuple((old.messages if old else ()) + tuple(messages)),
            oracle=bool(old and old.oracle), shapes=old.shapes if old else (),
            deciding=old.deciding if old else None)
        return PassResult(False, {"messages": messages})
