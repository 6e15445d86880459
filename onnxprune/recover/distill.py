"""Recover a pruned model by knowledge distillation from the original (framework-agnostic).

The student is the pruned ONNX graph, run with torch by ``TorchGraph`` so that its remaining
weights train with autograd; the teacher is the original ONNX model, run once with
onnxruntime. Validation scores the student's current weights on torch's outputs (the bridge
computes what onnxruntime does, to float rounding), or through onnxruntime for a metric that
runs the model itself; the recovery pass then measures the deployed model with onnxruntime.
The graph structure never changes.

>>> model, info = distill(pruned, original, {"input": x},
...                       metric=get_metric("psnr"))        # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import onnx
import torch

from ..errors import UsageError
from ..ir.memory import heap_reuse
from ..ir.runtime import session
from ..progress import task
from ..search.quality import Metric
from ..verify.checks import cut_arrays
from .distill_data import (
    Data,
    Targets,
    calibration,
    input_names,
    minibatches,
    native,
    split,
    static_batch,
    typed,
)
from .torch_bridge import TorchGraph
from .torch_threads import torch_threads
from .train_device import (
    adam,
    fitting,
    flush_denormals,
    resolve,
    resolve_precision,
    threads,
)

__all__ = ["distill"]

EVAL_EVERY = 20  # steps between validations at most
# a training loss this many times the student's first stops the run as diverged: Adam at 1e-3
# killed PP-OCR det and rec students (constant outputs, loss 10-50x the first) and the rest of
# such a run only cost time (MiniLM's first steps peak at 2.3x and recover)
DIVERGED = 8.0
# a validation gain under this fraction of the metric's value keeps the weights but does not
# reset patience: MiniLM at lr 1e-5 gained 1e-5 of cosine per validation for 200 more steps
# (0.9914 at step 96, 0.9926 at 300, 70 s)
MIN_GAIN = 1e-4
# guard samples scored at each gain (the first ones): MiniLM's 64 probe sentences cost 0.23 s a
# validation, as much as a training step, at every gain of a slow learning rate
GUARD_ROWS = 16
# gains the guard refuses in a row before the run stops: this learning rate fits the calibration
# data's style (MiniLM at 1e-4: every gain refused, 30 steps to patience, 12 s)
GUARD_PATIENCE = 3
MATCHED = 1e-3  # a student this close to the teacher's own validation metric is not trained

ModelLike = onnx.ModelProto | str | os.PathLike
TrainSpec = Callable[[str], bool] | Iterable[str] | str | None
LOSSES = ("mse", "kl")


def distill(
    student: ModelLike,
    teacher: ModelLike,
    calib: Mapping[str, np.ndarray],
    *,
    metric: Metric | None = None,
    steps: int = 300,
    lr: float | Sequence[float] = 1e-3,
    batch_size: int = 32,
    val_fraction: float = 0.2,
    patience: int | None = 10,
    eval_every: int | None = None,
    seed: int = 0,
    boundaries: Sequence[str] = (),
    boundary_weight: float = 0.1,
    train: TrainSpec = None,
    loss: str = "mse",
    interface: Mapping | None = None,
    reads: Sequence[str] | None = None,
    guard: Mapping[str, np.ndarray] | None = None,
    teacher_outputs: Mapping[str, np.ndarray] | None = None,
    device: str | torch.device = "auto",
    precision: str = "fp32",
) -> tuple[onnx.ModelProto, dict]:
    """Fine-tune ``student``'s float initializers to reproduce ``teacher``'s outputs.

    ``calib``: arrays keyed by model input name, batch first (other keys, such as
    ``"labels"``, only reach the metric). A seeded ``val_fraction`` of the samples is held out
    for validation (with 0, the training samples are also the validation set).

    The loss is the mean over float outputs of MSE(student, teacher) / Var(teacher output),
    or with ``loss="kl"`` the mean over output positions of KL(teacher || student) of the
    softmax over the last axis (logits: a language model's or a classifier's), plus
    ``boundary_weight`` times the normalized MSE over ``boundaries``: intermediate tensors
    (by name) present in both graphs with the same shape (others are ignored and not listed in
    ``info["boundaries"]``). Adam, ``steps`` mini-batches of ``batch_size``, at the learning
    rate ``lr``, or at each of several in turn: the next (from the student's own weights, on
    the same mini-batches) only when the last gained nothing or diverged, the best try kept
    (``info["lr"]``, ``info["tries"]``); the set-up (the teacher's outputs, the student's
    first scores, the step's memory) is made once for all.

    Every ``eval_every`` steps (default: once an epoch of the training split, at most every
    ``EVAL_EVERY``) the current weights are scored on the validation split: ``metric`` (an
    ``onnxprune.search.quality.Metric``, on the student's outputs) or, without one, the
    negative distillation loss. The best weights win; training stops after ``patience``
    evaluations without an improvement of ``MIN_GAIN`` of the metric's value (smaller gains
    keep their weights) spanning a tenth of ``steps`` at least (a well-trained
    model's student may dip for a while before it gains; ``None``: never), or when the loss is
    not finite or ``DIVERGED`` times the first. ``train`` restricts which initializers train: a
    predicate on the name, or names / glob patterns (default: all float initializers but
    scalars and ``Pow`` exponents, which are arithmetic rather than weights, and lookup tables
    a ``Gather`` reads rows of, such as token and position embeddings: a few calibration
    sentences would move the rows of the tokens they use away from all the others, and the
    dense update of a vocabulary was a third of each step).

    ``interface``: when the student's interface differs from the teacher's (a decoder's
    key/value cache cut to the kept heads: ``verify.checks.cut_arrays``'s cuts; inputs and
    outputs the student lacks are left out by name), ``calib`` is the teacher's data, cut for
    the student, and the teacher's outputs are cut alike. ``reads``: the outputs ``metric``
    reads, by name (None: all).

    ``guard``: samples of another style (the random-token probe; its first ``GUARD_ROWS``),
    never trained on: with a ``metric``, weights that make it score worse on them than the
    student did are never the best, and ``GUARD_PATIENCE`` such gains in a row stop the run
    (``"stopped": "guard"``): it learns the calibration data's style only (MiniLM on templated
    sentences: 300 steps whose every gain the probe then undid).

    ``teacher_outputs``: the teacher's outputs on ``calib`` by name, held by the caller (the
    run's reference outputs; used where they serve as the teacher's own, else it runs).

    Returns the best model (same nodes and initializer names/shapes as ``student``) and
    ``{"steps", "best_step", "val_before", "val_after", "history": [(step, train_loss,
    val_value)], "seconds", "stopped" ("budget" | "patience" | "diverged" | "matched": the
    student scores the teacher's own metric on the validation split, to ``MATCHED`` of its
    size, before training or at an evaluation, where training stops), "metric",
    "boundaries", "trained"}``; ``train_loss`` is the mean mini-batch loss since the previous
    evaluation (at step 0: the loss on the first ``batch_size`` training samples).
    ``device``: where the student trains (``train_device.resolve``: auto is a CUDA GPU when
    torch sees one); the teacher runs on onnxruntime as the run's other inference does, and
    the data and targets move to the device a mini-batch at a time (``info["device"]``).
    Deterministic for a ``seed`` on the CPU (torch runs on a thread count the model alone
    decides: ``train_device.PARALLEL_MACS``); a GPU's kernels may differ in the last bits.
    ``precision``: ``fp32``, or ``bf16``: each training step's forward pass under torch's
    autocast to bfloat16 (products in bfloat16, the weights, gradients, Adam, losses,
    validation and the written model float32), where the device computes bfloat16 natively
    (else fp32, with a warning; ``info["precision"]``): MiniLM's CPU step 1.4x faster.
    """
    start = time.perf_counter()
    _check_args(steps, lr, batch_size, val_fraction, eval_every, patience)
    if loss not in LOSSES:
        raise UsageError(f"distill: loss must be one of {', '.join(LOSSES)}, not {loss!r}")
    dev = resolve(device)
    precision = resolve_precision(precision, dev)
    student, teacher = _load(student), _load(teacher)
    graph = TorchGraph(student)
    trained = _select_trainable(graph, train, student)
    graph.to(dev)
    teacher_feeds = None
    if interface is not None or not set(input_names(teacher)) <= set(graph.input_names):
        teacher_feeds = typed(calib, teacher)
        calib = cut_arrays(calib, interface or {})
    batch = calibration(calib, graph, student)
    n = len(next(iter(batch.values())))
    rng = np.random.default_rng(seed)
    train_idx, val_idx = split(n, val_fraction, rng)
    guard_idx = np.arange(0)
    if guard is not None and metric is not None and not metric.on_model and \
            teacher_feeds is None:  # appended after the samples the split draws from
        extra = {k: v[:GUARD_ROWS] for k, v in calibration(guard, graph, student).items()}
        if set(extra) == set(batch):
            guard_idx = np.arange(n, n + len(next(iter(extra.values()))))
            batch = {k: np.concatenate([v, extra[k]]) for k, v in batch.items()}
    static = static_batch(student)
    size = static or min(batch_size, len(train_idx))
    if eval_every is None:  # a tiny calibration set is learnt by heart in far fewer steps
        eval_every = int(min(EVAL_EVERY, max(1, np.ceil(len(train_idx) / size))))

    feeds = {k: batch[k] for k in graph.input_names}
    targets = Targets(teacher, feeds, graph, boundaries, train_idx, static, teacher_feeds,
                      dict(interface or {}), None if guard_idx.size else teacher_outputs)
    data = Data(graph, feeds, targets, boundary_weight, static, loss, precision)
    val_batch = {k: v[val_idx] for k, v in batch.items()}
    read = [i for i, n in enumerate(graph.output_names) if reads is None or n in set(reads)]
    val_teacher = [targets.outputs_all[i][val_idx] for i in read]

    def evaluate(idx: np.ndarray = val_idx, on=val_batch, want=val_teacher) -> float:
        if metric is None:
            return -data.mean_loss(idx)
        if metric.on_model:  # the metric runs the deployed model itself
            return _model_metric(metric, graph.write_back(student))
        outs = data.outputs(idx)
        axes = [targets.axes[i] for i in read]  # the metric reads outputs as the model gives them
        return metric(native([outs[i] for i in read], axes), on, native(want, axes))

    guard_batch = {k: v[guard_idx] for k, v in batch.items()}
    guard_teacher = [targets.outputs_all[i][guard_idx] for i in read]

    def guarded() -> bool:
        """The current weights score the guard samples no worse than the student did."""
        return not guard_idx.size or utility(evaluate(guard_idx, guard_batch, guard_teacher)
                                             ) >= guard_floor

    def utility(value: float) -> float:
        u = value if metric is None else metric.utility(value)
        return u if np.isfinite(u) else -np.inf

    rates = [float(lr)] if np.isscalar(lr) else [float(r) for r in lr]
    with torch_threads(threads(student, feeds, size)), flush_denormals():
        val_before = evaluate()
        guard_floor = utility(evaluate(guard_idx, guard_batch, guard_teacher)) if \
            guard_idx.size else -np.inf
        initial = {k: p.detach().clone() for k, p in graph.params.items()}
        # the teacher's own validation utility: a student that scores it has nothing to gain
        ceiling = utility(metric(val_teacher, val_batch, val_teacher)) if \
            metric is not None and not metric.on_model else np.inf
        stopped = "matched" if _matched(utility(val_before), ceiling) else None
        fit = None if static or stopped or not steps else fitting(  # (a step as it will run)
            data.step, train_idx, list(graph.params.values()), dev)
        if fit == 0:
            stopped = "memory"  # one sample's step does not fit under --memory
        elif fit is not None:
            size = min(size, fit)
            data.rows = min(data.rows, fit)  # inference in chunks of as many at most
        first = (0, data.mean_loss(train_idx[:size]), val_before)
        drawn = rng.bit_generator.state  # each rate's mini-batches are the same draws
        tries: list[dict] = []
        with heap_reuse():  # (after the fitting: its resident-memory probe sees fresh pages)
            for rate in rates:  # the next only when this one gained nothing
                if tries:
                    with torch.no_grad():
                        for k, p in graph.params.items():
                            p.copy_(initial[k])
                    rng.bit_generator.state = drawn
                run = {"lr": rate, "stopped": stopped or "budget", "done": 0, "history": [first],
                       "best": (utility(val_before), 0, val_before, initial)}
                if stopped is None:
                    opt = adam([graph.param(name) for name in trained], rate)
                    with task("distill", steps, at_most=True) as advance:  # stops early
                        _train(run, opt, data, minibatches(train_idx, size, rng), steps,
                               eval_every, patience, evaluate, utility, guarded, ceiling, advance)
                tries.append(run)
                gain = run["best"][0] - utility(val_before)
                if (gain > 0 and run["stopped"] != "diverged") or run["stopped"] in (
                        "matched", "memory"):
                    break
    chosen = max(tries, key=lambda t: t["best"][0] - utility(val_before))
    _, best_step, best_val, best_state = chosen["best"]
    with torch.no_grad():  # the best weights (the student's own if nothing beat them)
        for k, p in graph.params.items():
            p.copy_(best_state[k])
    info = {
        "steps": chosen["done"], "best_step": best_step, "val_before": val_before,
        "val_after": best_val, "history": chosen["history"],
        "seconds": time.perf_counter() - start, "stopped": chosen["stopped"],
        "metric": metric.name if metric is not None else "-distill_loss",
        "boundaries": list(targets.boundaries), "trained": len(trained), "loss": loss,
        "guard": int(guard_idx.size), "batch_size": int(size), "lr": chosen["lr"],
        "tries": len(tries), "device": str(dev), "precision": precision,
    }
    return graph.write_back(student), info


def _train(run: dict, opt, data: Data, batches, steps: int, eval_every: int,
           patience: int | None, evaluate, utility, guarded, ceiling: float, advance) -> None:
    """Train at one learning rate from the weights as they are; ``run`` records the steps
    done, why it stopped, the history and the best (utility, step, value, weights)."""
    history = run["history"]
    best_util, best_step, best_val, best_state = run["best"]
    bad, last, window = 0, 0, []
    refused = 0  # gains on the validation split the guard refused, in a row
    owner = data.graph.params
    for step in range(1, steps + 1):
        step_loss = data.step(next(batches))
        if not torch.isfinite(step_loss):
            run["stopped"] = "diverged"
            break
        opt.zero_grad(set_to_none=True)
        step_loss.backward()
        opt.step()
        run["done"], window = step, window + [step_loss.item()]
        if step % eval_every == 0 or step == steps:
            value = evaluate()
            history.append((step, float(np.mean(window)), value))
            window = []
            if history[-1][1] > DIVERGED * max(history[0][1], 1e-12):
                run["stopped"] = "diverged"  # a dead student (constant outputs), not a dip
                break
            better = utility(value) > best_util
            if better and guarded():
                gained = utility(value) - best_util > MIN_GAIN * abs(best_util)
                best_util, best_step, best_val = utility(value), step, value
                best_state = {k: p.detach().clone() for k, p in owner.items()}
                bad, last, refused = (0, step, 0) if gained else (bad + 1, last, 0)
            else:
                bad, refused = bad + 1, refused + 1 if better else refused
            run["best"] = (best_util, best_step, best_val, best_state)
            advance(1, f"loss {history[-1][1]:.4g}  val {value:.4g}")
            if _matched(best_util, ceiling):
                run["stopped"] = "matched"  # reached the teacher's own score: nothing to gain
                break
            if refused >= GUARD_PATIENCE:
                run["stopped"] = "guard"  # its gains are the calibration style's alone
                break
            if patience is not None and bad >= patience and step - last >= steps // 10:
                run["stopped"] = "patience"
                break
        else:
            advance(1)


def _model_metric(metric: Metric, model: onnx.ModelProto) -> float:
    """A metric that runs the model itself (episodes, a pipeline), on onnxruntime."""
    if metric.on_model == "model":
        return metric.value_of(metric.fn, model)
    sess = session(model)
    return metric.value_of(metric.fn, lambda feeds: sess.run(None, feeds))


# -- small helpers ----------------------------------------------------------------------------


def _load(model: ModelLike) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model))


def _check_args(steps, lr, batch_size, val_fraction, eval_every, patience) -> None:
    rates = np.atleast_1d(np.asarray(lr, dtype=float))
    if steps < 0 or batch_size < 1 or (eval_every is not None and eval_every < 1) or \
            not rates.size or (rates <= 0).any():
        raise UsageError("distill: steps >= 0, batch_size >= 1, eval_every >= 1 and lr > 0")
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"distill: val_fraction must be in [0, 1), not {val_fraction}")
    if patience is not None and patience < 1:
        raise UsageError(f"distill: patience must be >= 1 or None, not {patience}")


def _structural(model: onnx.ModelProto) -> set[str]:
    """Float initializers that are arithmetic, not weights: scalars (epsilons, scales, the
    ``2`` of a LayerNorm spelled ``Pow(x - mean, 2)``) and every ``Pow`` exponent. Training an
    exponent is undefined: d(x^e)/de = x^e ln(x) is NaN for the negative bases a centred
    activation has, and one Adam step makes the whole model NaN."""
    inits = {i.name: i for i in model.graph.initializer}
    out = {name for name, i in inits.items() if len(i.dims) == 0}
    out |= {n.input[1] for n in model.graph.node
            if n.op_type == "Pow" and len(n.input) > 1 and n.input[1] in inits}
    return out


def _matched(student: float, teacher: float) -> bool:
    """The student's utility is the teacher's own to ``MATCHED`` of its size (PP-OCR rec
    after compensation: CTC agreement 1.00992 against 1.01000, every line read alike)."""
    if not np.isfinite(teacher):  # (PSNR of the teacher against itself: nothing to reach)
        return False
    return student >= teacher - MATCHED * max(abs(teacher), 1e-12)


def _tables(model: onnx.ModelProto) -> set[str]:
    """Float initializers that ``Gather`` nodes read rows of (embedding tables)."""
    inits = {i.name for i in model.graph.initializer}
    return {n.input[0] for n in model.graph.node
            if n.op_type == "Gather" and n.input and n.input[0] in inits}


def _select_trainable(graph: TorchGraph, train: TrainSpec,
                      model: onnx.ModelProto | None = None) -> list[str]:
    """The initializers to train (the others are frozen); by default every float initializer
    but the structural ones of ``model`` (:func:`_structural`) and its lookup tables
    (:func:`_tables`)."""
    names = graph.initializer_names()
    if train is None:
        fixed = _structural(model) | _tables(model) if model is not None else set()
        chosen = [n for n in names if n not in fixed]
    elif callable(train):
        chosen = [n for n in names if train(n)]
    else:
        patterns = [train] if isinstance(train, str) else list(train)
        unmatched = [p for p in patterns if not fnmatch.filter(names, p)]
        if unmatched:
            raise UsageError(f"distill: train pattern(s) {unmatched} match no float initializer")
        chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        raise UsageError("distill: no float initializer to train")
    for n in names:
        graph.param(n).requires_grad_(n in chosen)
    return chosen
