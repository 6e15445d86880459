"""Calibration data and the application metric."""

from __future__ import annotations

import numpy as np

from ...analysis.size import node_costs
from ...calib import DEFAULT_MAX_LENGTH, Settings
from ...calib import read as read_calibration
from ...calib.images import RESAMPLERS, RESIZE
from ...errors import UsageError, VerificationError, warn
from ...ir.arrays import Calibration, axes_of
from ...ir.shapes import feeds_at, input_specs
from ...ir.weights import proto
from ...options import Option, OptionError, number
from ...options import path as path_option
from ...options import text as text_option
from ...search.evaluate import Evaluator
from ...search.executors import make_pool
from ...search.memory import search_budget
from ...search.quality import get_metric
from ..base import Context, Pass, PassResult
from ..support import coverage, stages
from ..support.inputs import verification_feeds
from ..support.padding import trim_padding
from ..support.probe import token_probe


def _arrays(value) -> dict[str, np.ndarray]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a dict of arrays keyed by input name, got {type(value).__name__}")
    return {str(k): np.asarray(v) for k, v in value.items()}


def _mean_std(value) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``0.5/0.5`` or ``0.485,0.456,0.406/0.229,0.224,0.225``: per-channel mean and std."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        mean, std = value
    else:
        mean, sep, std = str(value).partition("/")
        if not sep:
            raise ValueError(f"expected MEAN/STD such as 0.5/0.5, got {value!r}")
    try:
        m = tuple(float(v) for v in (mean.split(",") if isinstance(mean, str) else mean))
        s = tuple(float(v) for v in (std.split(",") if isinstance(std, str) else std))
    except ValueError:
        raise ValueError(f"expected numbers in MEAN/STD, got {value!r}") from None
    if not m or not s or any(v <= 0 for v in s):
        raise ValueError(f"expected MEAN/STD with positive STD values, got {value!r}")
    return m, s


RANDOM = "random:"  # --calib random:N


class Calibrate(Pass):
    name = "calibrate"
    description = "Calibration batch: an .npz keyed by input name (+ labels), or N random samples."
    requires = ("graph",)
    provides = ("calib", "eval_data")
    uses = ("branches", "heldout", "pinned", "probe", "source_path")

    options = (
        Option("path", None, "calibration data, the kind found from the path: an .npz of "
               "arrays keyed by model input name, batch first (plus 'labels' for accuracy); a "
               "folder, glob or list file of images (sub-folders, or a label after each listed path: "
               "class labels); a .txt (a sample a line) or .jsonl ('text' fields, and "
               "'text_pair' for sentence pairs) with a tokenizer; a folder of WAV/FLAC "
               "recordings; a datasets save_to_disk folder; or random:N for N random samples of "
               "the input shapes. Readers: pip install 'onnxprune[data]'", parse=path_option,
               public="calib",
               metavar="PATH", type_name="path"),
        Option("random", None, "N random calibration samples from the input shapes (no file "
               "needed; the same as --calib random:N)", parse=number(1, integer=True), public="calib_random", metavar="N",
               type_name="int"),
        Option("arrays", None, "calibration arrays given in code (the API's calib={...})",
               parse=_arrays, type_name="dict"),
        Option("normalize", None, "images: per-channel MEAN/STD after scaling to [0, 1], e.g. "
               "0.485,0.456,0.406/0.229,0.224,0.225 (default: a preprocessor_config.json beside "
               "the model, else none)", parse=_mean_std, public="calib_normalize",
               metavar="MEAN/STD", type_name="str"),
        Option("resize", "stretch", "images: to the input's size by stretching, the shorter "
               "side and a centre crop, letterbox (centred, black padding) or pad (PaddleOCR's "
               "text lines: the height to the input's, the width in ratio rounded up and at "
               "most the input's, padded right; the padding zero in the model's input)",
               choices=RESIZE, public="calib_resize", type_name="str"),
        Option("resampler", "pillow", "images: the bilinear resize of Pillow (antialiased when "
               "it shrinks, as torchvision and Hugging Face processors resize) or of OpenCV "
               "(cv2.resize, as PaddleOCR and YOLO pipelines preprocess; needs "
               "opencv-python-headless): the one the model's own pipeline uses gives its very "
               "arrays", choices=RESAMPLERS, public="calib_resampler", type_name="str"),
        Option("channels", "rgb", "images: channel order of a 3-channel input",
               choices=("rgb", "bgr"), public="calib_channels", type_name="str"),
        Option("tokenizer", None, "text: a tokenizers tokenizer.json (default: the one beside "
               "the model)", parse=path_option, public="tokenizer", metavar="FILE",
               type_name="path"),
        Option("max_length", None, "text: tokens a sample is truncated at (default: the "
               "input's static length, else max_position_embeddings of a config.json beside "
               f"the model, else {DEFAULT_MAX_LENGTH})",
               parse=number(1, integer=True), public="max_length", metavar="N",
               type_name="int"),
        Option("sample_rate", None, "audio: the rate recordings are resampled to, Hz "
               "(default: a pinned sample-rate input's value)", parse=number(1, integer=True),
               public="sample_rate", metavar="HZ", type_name="int"),
        Option("column", None, "a datasets folder: the column to read (default: its only "
               "column besides label)", parse=text_option, public="calib_column",
               metavar="NAME", type_name="str"),
        Option("holdout", 0.2, "share of the calibration samples held out: never used to "
               "search or refit, only to measure quality after every stage (0: none)",
               parse=number(0, 1, hi_open=True), public="holdout", metavar="F",
               type_name="float"),
        Option("probe", "auto", "a shifted held-out set for models that read token ids: the "
               "calibration samples with their content tokens replaced by random ids of the "
               "vocabulary they use; measured after every stage when the metric compares with "
               "the original (cosine, kl), and a recovery stage that makes it worse is undone "
               "(catches refits that learn the calibration text's style). auto: when the model "
               "reads token ids; off: never", choices=("auto", "off"), public="probe",
               type_name="str"),
        Option("trim", "auto", "trailing positions every sample's attention mask zeroes (token "
               "arrays padded to a fixed length): auto drops them from the sequence inputs when "
               "the original model's outputs are the same without them (each stage then runs "
               "only the real tokens); off: the arrays as given", choices=("auto", "off"),
               public="calib_trim", type_name="str"),
        Option("seed", 0, "seed of the random samples and of the held-out split",
               parse=number(0, integer=True), type_name="int"),
    )

    def setup(self) -> None:
        if self.path is not None and str(self.path).startswith(RANDOM):  # --calib random:N
            if self.random is not None:
                raise OptionError(self.name, "path", f"{self.path} and random both given")
            random = next(o for o in self.options if o.name == "random")
            try:
                self.random = random.convert(self.name, str(self.path)[len(RANDOM):])
            except OptionError as err:
                raise OptionError(self.name, "path", f"{self.path}: N {err.message}") from None
            self.path = None
        given = [o for o in ("path", "random", "arrays") if getattr(self, o) is not None]
        if len(given) != 1:
            raise OptionError(self.name, "path", "give exactly one calibration source: a file "
                              "(path), random samples (random) or arrays")

    def preflight(self, ctx: Context) -> None:
        if self.path is not None and not any(ch in str(self.path) for ch in "*?[") and \
                not self.path.exists():
            raise OptionError(self.name, "path", f"{self.path}: no such file or folder")

    def run(self, ctx: Context) -> PassResult:
        source = None
        if self.arrays is not None:
            ctx.calib = {k: np.asarray(v) for k, v in self.arrays.items()}
        elif self.path is not None:
            got = read_calibration(self.path, input_specs(proto(ctx.skeleton())), Settings(
                self.normalize, self.resize, self.channels == "bgr", self.tokenizer,
                self.max_length, self.sample_rate, self.column, ctx.source_path,
                dict(ctx.config.input_shapes or {}), dict(ctx.pinned), self.resampler))
            ctx.calib, source = got.arrays, got.note
        else:
            model = ctx.skeleton(ctx.require("graph", self.name))
            ctx.calib = _random_samples(ctx, model, self.random, self.seed)
        ctx.calib = _calibration(ctx, ctx.calib)
        if self.trim == "auto":
            ctx.calib, trimmed = trim_padding(ctx.skeleton(), ctx.calib)
            if trimmed is not None:
                source = f"{source}; {trimmed}" if source else str(trimmed)
        if self.probe == "auto":
            ctx.probe = token_probe(ctx.graph, ctx.calib, self.seed + 1)
        ctx.calib, ctx.heldout = split_holdout(ctx.calib, self.holdout, self.seed)
        info = {"samples": ctx.calib.samples, "arrays": sorted(ctx.calib)}
        if source:
            info["source"] = source
        if ctx.heldout is not None:
            info["heldout"] = ctx.heldout.samples
        if ctx.probe is not None:
            info["probe"] = ctx.probe.samples
        if ctx.branches:
            opened = ", ".join(o.name for o in ctx.branches if o.inside is None)
            warn(f"the model's If ({opened}) was opened to prune both branches; what the "
                 "calibration data measures is the branch it takes, and the other's channels "
                 "read as free to a search: pin the input that chooses (--input-value) when "
                 "the application takes one branch")
        return PassResult(False, info)


MIN_SHARE = 2  # samples on each side of a held-out split, at least


def split_holdout(calib: Calibration, fraction: float, seed: int = 0
                  ) -> tuple[Calibration, Calibration | None]:
    """(fitted share, held-out share): ``fraction`` of the samples, chosen at random
    (seeded), are held out; none when either share would hold fewer than two samples."""
    n = calib.samples
    held = int(round(n * fraction))
    if fraction <= 0:
        return calib, None
    if held < MIN_SHARE or n - held < MIN_SHARE:  # the quality lines say it
        return calib, None
    order = np.random.default_rng(seed).permutation(n)
    return calib.take(np.sort(order[held:])), calib.take(np.sort(order[:held]))


def _random_samples(ctx: Context, model, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` random samples at the first chosen shapes (batch axes ``n`` long); pinned inputs
    get their values."""
    shapes = {k: list(np.shape(v)) for k, v in verification_feeds(ctx, model, count=1)[0].items()}
    for spec in input_specs(model):
        if spec.name not in ctx.pinned and spec.batch_axis is not None:
            shapes[spec.name][spec.batch_axis] = n
    return feeds_at(input_specs(model), shapes, ctx.pinned, seed)


def _calibration(ctx: Context, arrays: dict[str, np.ndarray]) -> Calibration:
    """The arrays checked against the model's inputs: each model input has one (pinned inputs
    take their value), with its samples along the input's batch axis (``ir.shapes``) or, for
    inputs without one, exactly the input's shape; at least one sample, one count for all,
    finite values; other dtypes of the same kind are cast to the model's, with a note."""
    out, axes = dict(arrays), {}
    for spec in input_specs(proto(ctx.skeleton())):
        name = spec.name
        if name in ctx.pinned:
            out[name], axes[name] = ctx.pinned[name], None
            continue
        if name not in out:
            raise UsageError(f"calibration data has no array for model input {name!r} "
                             f"(it has {', '.join(sorted(arrays))})")
        arr = np.asarray(out[name])
        axis = spec.batch_axis
        want = list(spec.dims)
        fits = arr.ndim == len(want) and all(
            not isinstance(w, int) or w == h or i == axis
            for i, (w, h) in enumerate(zip(want, arr.shape, strict=True)))
        if axis is None and fits and arr.ndim:
            axes[name] = None  # fed whole: a fixed-shape input without a batch
        elif fits and axis is not None:
            axes[name] = axis
            if arr.shape[axis] == 0:
                raise UsageError(f"calibration array {name!r} holds no samples "
                                 f"(shape {list(arr.shape)})")
        elif arr.ndim == 0 and not want:
            axes[name] = None
        else:
            where = (f", samples along axis {axis}" if axis is not None else "")
            shown = [d if isinstance(d, int) else (d or "?") for d in want]
            raise UsageError(f"calibration array {name!r} has shape {list(arr.shape)}; the "
                             f"model expects {shown}{where}")
        out[name] = arr = _as_model_dtype(name, arr, spec.dtype)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise UsageError(f"calibration array {name!r} holds {bad} NaN or infinite "
                             f"value(s); calibration data must be finite")
    calib = Calibration(out, axes)
    counts = {k: np.shape(v)[a] for k, v in calib.items() if (a := calib.axes.get(k)) is not None}
    if len(set(counts.values())) > 1:
        raise UsageError(f"calibration arrays disagree on the number of samples: {counts}")
    if not counts:
        raise UsageError("calibration data holds no samples")
    return calib


_CASTABLE = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}  # model kind -> data kinds accepted


def _as_model_dtype(name: str, arr: np.ndarray, dtype) -> np.ndarray:
    if dtype is None or arr.dtype == np.dtype(dtype):
        return arr
    want = np.dtype(dtype)
    if arr.dtype.kind not in _CASTABLE.get(want.kind, ""):
        raise UsageError(f"calibration array {name!r} is {arr.dtype}; the model input is "
                         f"{want} (convert the data)")
    warn(f"calibration array {name!r} is {arr.dtype}; cast to {want} as the model expects")
    return arr.astype(want)


class UseMetric(Pass):
    name = "metric"
    description = ("The application metric (psnr, mse, accuracy, perplexity, cosine, kl, "
                   "module:function).")
    provides = ("metric",)

    options = (
        Option("metric", "cosine", "application metric: psnr, mse (reconstruction vs input), "
               "accuracy (labels), perplexity (causal LM logits vs the next input_ids), "
               "cosine, kl (agreement with the original outputs), or "
               "module:function / file.py:function", parse=get_metric, public="metric",
               metavar="NAME", type_name="str"),
    )

    def gives(self) -> set[str]:
        # a metric that drives the model itself (episodes) brings its own data
        return set(self.provides) | ({"eval_data"} if self.metric.on_model else set())

    def run(self, ctx: Context) -> PassResult:
        ctx.metric = self.metric
        return PassResult(False, {"metric": self.metric.name})


def evaluator(ctx: Context, by: str) -> Evaluator:
    """The mask-oracle evaluator of the current graph, built once per analysis (a resource of
    the run: the pipeline closes it, and its pool)."""
    res = ctx.resources
    if res.evaluator is None or res.evaluator.analysis is not ctx.analysis:
        metric = ctx.metric or get_metric("cosine")
        if ctx.calib is None and not metric.on_model:
            raise UsageError(f"{by} needs calibration data (pass 'calibrate')")
        res.close()
        res.evaluator = ev = Evaluator(ctx.skeleton(), ctx.analysis, ctx.calib, metric,
                                       memory=search_budget(), reads=stages.reads(ctx),
                                       costs=node_costs(ctx.graph))
        if ev.reference:  # the original's outputs (the gates all open)
            names = ev.oracle.output_names
            read = range(len(names)) if ev.read is None else ev.read
            coverage.check(ctx, [ev.reference[i] for i in read], [names[i] for i in read])
        _attach_pool(ctx, ev)
    return res.evaluator


def _attach_pool(ctx: Context, ev: Evaluator) -> None:
    """Candidates scored by the run's executor (``--executor``) where it is not this process."""
    cfg = ctx.config
    if cfg.executor != "local":
        ev.attach(make_pool(cfg.executor, ev, cfg.workers, cfg.ray_address))


def _calibration_of(ctx: Context) -> Calibration:
    return ctx.calib if isinstance(ctx.calib, Calibration) else Calibration(
        ctx.calib, axes_of(ctx.calib))


def sampled(ctx: Context, samples: int, seed: int = 0) -> Calibration | None:
    """A seeded draw of ``samples`` of the calibration samples, in their order (None: there
    are no more than that)."""
    data = _calibration_of(ctx)
    if data.samples <= samples:
        return None
    pick = np.random.default_rng(seed).choice(data.samples, size=samples, replace=False)
    return data.take(np.sort(pick))


def sampled_evaluator(ctx: Context, data: Calibration) -> Evaluator:
    """An evaluator of the current graph, as ``evaluator``'s, on ``data`` (``sampled``'s draw).
    Its pool takes the place of the run's evaluator's (whose workers would hold the CPUs
    the new ones wait for; that one scores here from then on). The caller closes it."""
    shared = ctx.resources.evaluator
    if shared is not None and shared.pool is not None:
        shared.attach(None)
    ev = Evaluator(ctx.skeleton(), ctx.analysis, data, ctx.metric or get_metric("cosine"),
                   memory=search_budget(), reads=stages.reads(ctx), costs=node_costs(ctx.graph))
    _attach_pool(ctx, ev)
    return ev


def augmented_evaluator(ctx: Context, copies: int, data: Calibration | None = None
                        ) -> Evaluator | None:
    """An evaluator of the current graph on the calibration data (or ``data``, a draw of it)
    followed by ``copies`` copies of it in other styles (``pipeline/support/augment.py``; None:
    the model reads neither token ids nor images). The caller closes it."""
    from ..support.augment import augmented

    data = _calibration_of(ctx) if data is None else data
    more = augmented(ctx.graph, data, copies) if copies > 0 else None
    if more is None:
        return None
    return Evaluator(ctx.skeleton(), ctx.analysis, more[0], ctx.metric or get_metric("cosine"),
                     memory=search_budget(), reads=stages.reads(ctx), costs=node_costs(ctx.graph))


class MeasureQuality(Pass):
    name = "quality"
    description = "The application metric before and after the selected cut (on the oracle)."
    evaluates = True
    requires = ("analysis", "plan", "eval_data")
    provides = ("quality",)

    def run(self, ctx: Context) -> PassResult:
        plan = ctx.require("plan", self.name)
        ev = evaluator(ctx, "measuring quality")
        after = ev.evaluate(~plan.removed)
        if not np.isfinite(after):
            raise VerificationError(f"the selected cut makes {ev.metric.name} {after} on the "
                                    "calibration data (the pruned model breaks); nothing written")
        ctx.quality = {"metric": ev.metric.name, "before": ev.base, "after": after,
                       "samples": ev.n}
        return PassResult(False, ctx.quality)
