"""What a distilled student learns from: the teacher's outputs on the calibration data, the
training and validation split, mini-batches, and the losses (normalized MSE, KL of logits).

The teacher runs once with onnxruntime (no graph optimizations); the student is a
``TorchGraph`` whose outputs the losses compare with the teacher's. The data and the
teacher's outputs stay in host memory; a mini-batch moves to the student's device (a GPU)
when it is drawn.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper

from ..errors import UsageError
from ..ir.arrays import axes_of
from ..ir.runtime import output_axes, session
from ..search.memory import cap, rows_for, search_budget
from ..search.quality import TINY, is_distribution
from ..verify.checks import cut_outputs
from .torch_bridge import TorchGraph
from .train_device import autocast

CHUNK = 256  # samples per inference call (onnxruntime or torch) outside training


class Targets:
    """The teacher's outputs and boundary activations on every calibration sample
    (onnxruntime, no graph optimizations), and their variances on the training split."""

    def __init__(self, teacher: onnx.ModelProto, feeds: dict[str, np.ndarray],
                 graph: TorchGraph, boundaries: Sequence[str], train_idx: np.ndarray,
                 static: int | None, teacher_feeds: dict[str, np.ndarray] | None = None,
                 cuts: dict | None = None, given: Mapping[str, np.ndarray] | None = None):
        """``teacher_feeds``: what the teacher reads when the student's interface differs (a
        key/value cache cut to the kept heads, or gone with its block; default ``feeds``);
        ``cuts``: the channels the student's outputs lost (``verify.checks.cut_arrays``);
        ``given``: the teacher's outputs on ``feeds`` by name, computed already (the run's
        reference outputs): the teacher runs only when they do not serve (boundaries asked,
        another interface, an output missing or of other rows)."""
        produced = {o for node in teacher.graph.node for o in node.output}
        mine = set(graph.node_outputs())
        wanted = [b for b in dict.fromkeys(boundaries) if b in produced and b in mine]
        outs = _matching_outputs(teacher, graph)
        theirs = feeds if teacher_feeds is None else teacher_feeds
        missing = [k for k in input_names(teacher) if k not in theirs]
        if missing:
            raise UsageError(f"calibration data lacks teacher input(s) {', '.join(missing)}")
        run = with_outputs(teacher, wanted)
        fed = {k: theirs[k] for k in input_names(teacher)}
        # each output's sample axis (a sequence-first CTC output: 1); every array here holds
        # its samples first, the metric sees them as the model gives them (``native``)
        self.axes = output_axes(teacher, outs)
        rows = len(next(iter(fed.values())))
        pairs = list(zip(outs, self.axes, strict=True))
        if given is not None and not wanted and teacher_feeds is None and all(
                k in given and given[k].shape[ax] == rows for k, ax in pairs):
            # held already (not a second copy), each with its samples first
            arrays = [np.moveaxis(given[k], ax, 0) for k, ax in pairs]
        else:
            arrays = run_ort(session(run, arena=cap() is None), fed, outs + wanted, static,
                             _rows(run, fed), self.axes + [0] * len(wanted))
        self.outputs_all = [np.moveaxis(a, ax, 0) for a, ax in zip(cut_outputs(
            [np.moveaxis(a, 0, ax) for a, ax in zip(arrays, self.axes, strict=False)],
            outs, cuts or {}), self.axes, strict=True)]
        # the student's shapes on one sample decide which boundaries are comparable
        probe = {k: v[np.resize(train_idx[:1], static or 1)] for k, v in feeds.items()}
        with torch.no_grad():
            mine_out = first(graph.run(probe, graph.output_names + wanted),
                             self.axes + [0] * len(wanted))
        for name, t, s in zip(graph.output_names, self.outputs_all, mine_out, strict=False):
            if t.shape[1:] != tuple(s.shape[1:]):
                raise UsageError(f"output {name!r}: teacher shape {t.shape[1:]}, student "
                                 f"{tuple(s.shape[1:])}")
        keep = [i for i, (t, s) in enumerate(zip(arrays[len(outs):], mine_out[len(outs):],
                                                 strict=True))
                if t.shape[1:] == tuple(s.shape[1:]) and np.issubdtype(t.dtype, np.floating)]
        self.boundaries = [wanted[i] for i in keep]
        floats = [i for i, t in enumerate(self.outputs_all) if np.issubdtype(t.dtype, np.floating)]
        if not floats:
            raise UsageError("the model has no floating-point output to distill")
        self.output_names = [graph.output_names[i] for i in floats]
        self.loss_axes = [self.axes[i] for i in floats] + [0] * len(keep)
        self.outputs = [torch.from_numpy(self.outputs_all[i]) for i in floats]
        self.probs = [is_distribution(self.outputs_all[i]) for i in floats]  # for loss kl
        self.acts = [torch.from_numpy(arrays[len(outs) + i]) for i in keep]
        self.scales = [variance(t, train_idx) for t in self.outputs + self.acts]


def _matching_outputs(teacher: onnx.ModelProto, graph: TorchGraph) -> list[str]:
    """The teacher's outputs the student's are compared with: by name (a student may have lost
    outputs with a removed block: a key/value cache), else in order."""
    names = [o.name for o in teacher.graph.output]
    if set(graph.output_names) <= set(names):
        return list(graph.output_names)
    if len(names) != len(graph.output_names):
        raise UsageError(f"the teacher has {len(names)} outputs, the student "
                         f"{len(graph.output_names)}")
    return names


class Data:
    """Mini-batch losses of the student against the teacher's targets."""

    def __init__(self, graph: TorchGraph, feeds: dict[str, np.ndarray], targets: Targets,
                 boundary_weight: float, static: int | None, kind: str = "mse",
                 precision: str = "fp32"):
        """``precision``: a training step's (``train_device.PRECISIONS``)."""
        self.graph, self.feeds, self.t = graph, feeds, targets
        self.names = targets.output_names + targets.boundaries
        self.boundary_weight, self.static, self.kind = boundary_weight, static, kind
        self.rows = CHUNK  # samples per inference call
        self.precision = precision

    def step(self, idx: np.ndarray) -> torch.Tensor:
        """A training step's loss on samples ``idx``: ``loss``, its forward pass in the step's
        precision (validation and inference stay float32)."""
        with autocast(self.precision, self.graph.device):
            return self.loss(idx)

    def loss(self, idx: np.ndarray, valid: int | None = None) -> torch.Tensor:
        """The loss on samples ``idx`` (only the first ``valid`` count): per output the
        normalized MSE or the KL divergence, per boundary the normalized MSE."""
        got = first(self.graph.run({k: torch.from_numpy(v[idx]) for k, v in self.feeds.items()},
                                   self.names), self.t.loss_axes)
        device = got[0].device  # the graph's: the targets follow a batch at a time
        rows = torch.from_numpy(np.asarray(idx, np.int64))
        want = [t.index_select(0, rows).to(device, non_blocking=True)  # (a copy of whole rows:
                for t in self.t.outputs + self.t.acts]  # PP-OCR rec's 48 MB took 38 ms indexed)
        n_out = len(self.t.outputs)
        # the losses in the targets' type (a bfloat16 step's outputs are bfloat16)
        got = [g if g.dtype == w.dtype else g.to(w.dtype) for g, w in zip(got, want, strict=True)]
        if valid is not None:  # (a slice of all rows still zero-filled its gradient)
            got, want = [g[:valid] for g in got], [w[:valid] for w in want]
        terms = [kl(g, w, self.t.probs[i]) if self.kind == "kl" and i < n_out
                 else F.mse_loss(g, w) / s  # (one kernel each way)
                 for i, (g, w, s) in enumerate(zip(got, want, self.t.scales, strict=True))]
        loss = torch.stack(terms[:n_out]).mean()
        if n_out < len(terms):
            loss = loss + self.boundary_weight * torch.stack(terms[n_out:]).mean()
        return loss

    def outputs(self, idx: np.ndarray) -> list[np.ndarray]:
        """The student's outputs on samples ``idx`` (inference, in chunks), as numpy."""
        parts = []
        with torch.no_grad():
            for part, valid in chunks(idx, self.static, self.rows):
                got = first(self.graph.run({k: torch.from_numpy(v[part])
                                            for k, v in self.feeds.items()}), self.t.axes)
                parts.append([g[:valid].cpu().numpy() for g in got])
        return [np.concatenate(p) for p in zip(*parts, strict=True)]

    def mean_loss(self, idx: np.ndarray) -> float:
        """The loss over all of ``idx`` (inference, in chunks)."""
        total = 0.0
        with torch.no_grad():
            for part, valid in chunks(idx, self.static, self.rows):
                total += self.loss(part, valid).item() * valid
        return total / len(idx)


def log_dist(t: torch.Tensor, probs: bool) -> torch.Tensor:
    """The log of a distribution over the last axis: ``t``'s softmax (logits), or ``t`` itself
    when it holds probabilities already (``search.quality.is_distribution``)."""
    if probs:
        return torch.log(t.clamp_min(TINY))
    return torch.log_softmax(t, -1)


def kl(student: torch.Tensor, teacher: torch.Tensor, probs: bool = False) -> torch.Tensor:
    """Mean KL(teacher || student) over the last axis: of the softmax of logits, or with
    ``probs`` of the outputs themselves (the teacher's are probabilities: it ends in Softmax)."""
    lq = log_dist(student, probs)
    lp = log_dist(teacher.to(lq.dtype), probs)
    return (lp.exp() * (lp - lq)).sum(-1).mean()


VARIANCE_ROWS_BYTES = 16 << 20  # of float64 copies at once while a variance is taken


def variance(t: torch.Tensor, idx: np.ndarray | None = None) -> float:
    """The variance of ``t``'s samples ``idx`` (default: all), over every element, in float64
    a few samples at a time (PP-OCR rec's 18,710-class outputs: 0.4 GB of copies at once)."""
    idx = np.arange(len(t)) if idx is None else np.asarray(idx)
    count = len(idx) * (t[0].numel() if len(t) else 0)
    if not count:
        return 1.0
    step = max(1, VARIANCE_ROWS_BYTES // max(8 * t[0].numel(), 1))
    parts = [idx[i:i + step] for i in range(0, len(idx), step)]
    mean = sum(float(t[p].double().sum()) for p in parts) / count
    v = sum(float(((t[p].double() - mean) ** 2).sum()) for p in parts) / count
    return v if v > 1e-12 else 1.0  # a constant target: plain MSE


def calibration(calib: Mapping[str, np.ndarray], graph: TorchGraph,
                 model: onnx.ModelProto) -> dict[str, np.ndarray]:
    axes = axes_of(calib)
    odd = [k for k in graph.input_names if axes.get(k, 0) != 0]
    if odd:
        raise UsageError(f"distillation needs every calibration input with its samples on "
                         f"axis 0; {', '.join(odd)} has them elsewhere or is fed whole")
    batch = {k: np.asarray(v) for k, v in calib.items()}
    missing = [k for k in graph.input_names if k not in batch]
    if missing:
        raise UsageError(f"calibration data lacks model input(s) {', '.join(missing)} "
                         f"(it has {', '.join(sorted(batch)) or 'nothing'})")
    sizes = {len(v) for v in batch.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise UsageError(f"calibration arrays must be non-empty and of one length, got {sizes}")
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    for k in graph.input_names:  # feed each input in its declared type
        if types.get(k):
            batch[k] = np.ascontiguousarray(batch[k], helper.tensor_dtype_to_np_dtype(types[k]))
    return batch


def typed(calib: Mapping[str, np.ndarray], model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The arrays of ``model``'s inputs in ``calib``, each in its declared type."""
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    return {k: np.ascontiguousarray(calib[k], helper.tensor_dtype_to_np_dtype(t) if t else None)
            for k, t in types.items() if k in calib}


def split(n: int, val_fraction: float, rng: np.random.Generator):
    perm = rng.permutation(n)
    n_val = int(round(n * val_fraction)) if val_fraction > 0 else 0
    n_val = min(max(n_val, 1 if val_fraction > 0 else 0), n - 1)
    if n_val == 0:
        return np.sort(perm), np.sort(perm)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def minibatches(idx: np.ndarray, size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless mini-batches of exactly ``size``: seeded permutations, one after another."""
    queue = np.empty(0, np.int64)
    while True:
        while len(queue) < size:
            queue = np.concatenate([queue, rng.permutation(idx)])
        yield queue[:size]
        queue = queue[size:]


def _rows(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> int:
    """Samples per inference call: ``CHUNK``, fewer under a memory cap (``--memory``)."""
    if cap() is None:
        return CHUNK
    return min(CHUNK, rows_for(model, feeds, None, search_budget(0.25)) or CHUNK)


def chunks(idx: np.ndarray, static: int | None, rows: int = CHUNK
           ) -> Iterator[tuple[np.ndarray, int]]:
    """``idx`` in chunks and the count of real samples in each: of ``rows``, or of exactly
    a model's ``static`` batch (the last chunk padded with repeats)."""
    size = static or rows
    for lo in range(0, len(idx), size):
        part = idx[lo:lo + size]
        yield (np.resize(part, size) if static else part), len(part)


# -- onnxruntime ------------------------------------------------------------------------------


def input_names(model: onnx.ModelProto) -> list[str]:
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def static_batch(model: onnx.ModelProto) -> int | None:
    """The fixed leading dimension of the graph inputs, if any (a ``dim_value`` of -1, as
    paddle2onnx writes for a dynamic batch, is no fixed size)."""
    inits = {i.name for i in model.graph.initializer}
    for i in model.graph.input:
        dims = i.type.tensor_type.shape.dim
        if i.name not in inits and dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            return int(dims[0].dim_value)
    return None


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the tensors ``names``."""
    if not names:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    present = {o.name for o in out.graph.output}
    for name in names:
        if name not in present:
            out.graph.output.append(helper.make_tensor_value_info(
                name, types.get(name) or onnx.TensorProto.FLOAT, None))
    return out


def run_ort(sess, feeds: dict[str, np.ndarray], names: Sequence[str],
            static: int | None, rows: int = CHUNK, axes: Sequence[int] | None = None
            ) -> list[np.ndarray]:
    """The outputs ``names`` on every sample, in chunks, each with its samples first (from
    its sample axis in ``axes``; default 0)."""
    n = len(next(iter(feeds.values())))
    axes = list(axes or [0] * len(names))
    parts = []
    for part, valid in chunks(np.arange(n), static, rows):
        outs = sess.run(list(names), {k: v[part] for k, v in feeds.items()})
        parts.append([np.moveaxis(o, ax, 0)[:valid] for o, ax in zip(outs, axes, strict=True)])
    return [np.concatenate(p) for p in zip(*parts, strict=True)]


def first(tensors: Sequence[torch.Tensor], axes: Sequence[int]) -> list[torch.Tensor]:
    """The student's ``tensors`` with their samples first (``axes``: each one's sample axis)."""
    return [t if ax == 0 else torch.movedim(t, ax, 0)
            for t, ax in zip(tensors, axes, strict=True)]


def native(arrays: Sequence[np.ndarray], axes: Sequence[int]) -> list[np.ndarray]:
    """Arrays held samples-first as the model gives them (``axes``: each one's sample axis)."""
    return [np.moveaxis(a, 0, ax) for a, ax in zip(arrays, axes, strict=True)]
