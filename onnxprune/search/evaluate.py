"""Fast candidate evaluation: the gated reference (mask oracle) in one onnxruntime session,
scored with an application metric on calibration data. A candidate runs from the latest kept
point of the graph before its first cut (``prefix.Prefixes``: a curve point of a late group
runs only the layers after it); where no point saves work, K candidate masks run as one batch
of K x N samples when the model has a dynamic batch and every gated tensor is batch-first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from ..analysis.model import ChannelAnalysis
from ..errors import UsageError
from ..ir.arrays import axes_of
from ..ir.runtime import one_sample, output_axes, run_batched, sample_slice, session, static_batch
from ..ir.weights import Skeleton, embed
from ..verify.oracle import GATES, Oracle
from .memory import activation_bytes, default_budget, rows_per_call
from .prefix import Prefixes
from .quality import Metric

# samples per onnxruntime call when candidates are batched: smaller calls ran faster on both
# models measured (the digits autoencoder, 256 images: 77 -> 118 candidates/s from 4096 to 256;
# all-MiniLM-L6-v2, 51 sentences: its search 31.7 -> 28.4 s) and hold far less (MiniLM's
# search peaked at 2.4 GB with 4096, 1.4 GB with 256: the activation estimate misses shapes a
# computed reshape hides, so the budget alone did not bound it)
MAX_ROWS = 256
# an evaluator keeps prefixes once it has been asked for more candidates than this (the call
# at hand counted): fewer do not repay the session that also outputs the points' tensors and
# the unpruned run that fills them (a search's evaluator wrapped by the refit's scores the
# chosen cut alone)
PREFIX_AFTER = 8
# a candidate's work (MACs over the calibration samples, symbolic sizes as 1) from which a
# model that runs K candidates at a time runs them from kept prefixes instead: below, a run is
# mostly call overhead, and prefixes gain nothing (the digits autoencoder, 1.2e8: its search
# 0.31 s K at a time, 0.33-0.36 s from prefixes); all-MiniLM-L6-v2 on 51 sentences, 1.1e9:
# 11.9 -> 8.4-10 s
PREFIX_MACS = 2e8
# what the prefixes may hold: tensors of kept runs, and the weights their sessions copy (those
# after each point; MiniLM: 183 MB for 9 points; with 64 MB, 4 late points: no gain)
PREFIX_TENSORS = 64 << 20
PREFIX_WEIGHTS = 256 << 20


class Evaluator:
    def __init__(self, reference: onnx.ModelProto | Skeleton, analysis: ChannelAnalysis,
                 calib: dict[str, np.ndarray] | None, metric: Metric, max_rows: int = MAX_ROWS,
                 threads: int | None = None, memory: int | None = None,
                 reads: Sequence[str] | None = None, costs: Mapping[str, float] | None = None,
                 prefixes: bool = True):
        """``memory``: the budget (bytes) the activations of one call must fit (None: the
        default budget, ``search.memory``); it bounds ``max_rows``. ``reads``: the outputs the
        metric reads, by name (None: all; a decoder's key/value cache outputs may leave with
        their blocks, and the metric then reads the others). ``costs``: work per node by name
        (MACs), where the kept points go and what a candidate costs (None: points spread by
        node count, and a model that runs K candidates at a time keeps doing so).
        ``prefixes``: False runs every candidate whole."""
        self.analysis, self.metric, self.max_rows = analysis, metric, max_rows
        self._reference, self.calib = reference, calib
        self.costs, self.threads = costs, threads
        # candidates from kept prefixes: built once it has scored more than PREFIX_AFTER
        # (counting the candidates asked for), where worth it (False: not used)
        self.prefixes: Prefixes | bool | None = None if prefixes else False
        self.scored = 0  # candidates scored in this process (a pool worker's: its own)
        self.oracle = Oracle(reference, analysis, threads=threads, search=True)
        self.reads = None if reads is None else list(reads)
        # the indices of the outputs the metric reads (None: all)
        self.read = None if reads is None else [
            i for i, name in enumerate(self.oracle.output_names) if name in set(reads)]
        self.evals = 0
        self.pool = None  # an executors pool: candidates are scored by its workers
        if metric.on_model:  # the metric drives the model itself (e.g. episodes)
            self.batch, self.inputs, self.n, self.batched = {}, {}, 0, False
            self.static_batch, self.reference = None, []
            self.base = self._of_model(np.ones(analysis.num_units, np.float32))
            self._check_base()
            return
        if calib is None:
            raise UsageError(f"metric {metric.name} needs calibration data (--calib)")
        ins = [i for i in self.oracle.session.get_inputs() if i.name != GATES]
        missing = [i.name for i in ins if i.name not in calib]
        if missing:
            raise UsageError(f"calibration data lacks model input(s) {', '.join(missing)} "
                             f"(it has {', '.join(sorted(calib)) or 'nothing'})")
        self.batch = calib
        self.axes = axes_of(calib)
        self.inputs = {i.name: np.asarray(calib[i.name]) for i in ins}
        sizes = {np.shape(v)[a] for k, v in calib.items() if (a := self.axes.get(k)) is not None}
        if len(sizes) != 1:
            raise UsageError(f"calibration arrays differ in length: {sorted(sizes)}")
        self.n = sizes.pop()
        self.static_batch = static_batch(self.oracle.session, self.inputs, self.axes)
        # each output's sample axis (a sequence-first [time, batch, classes] output: 1)
        self.out_axes = output_axes(self.oracle.model, self.oracle.output_names, self.axes)
        self.budget = memory if memory is not None else default_budget()
        self.per_sample = activation_bytes(self.oracle.model, one_sample(self.inputs,
                                                                          self.axes))
        rows = rows_per_call(self.budget, self.per_sample, self.static_batch or 1,
                             "candidate evaluation")
        if rows is not None:
            self.max_rows = min(self.max_rows, rows)
        # K candidates as one run of K x N samples: a dynamic batch, batch-first data, and
        # one candidate's samples fit a call
        self.batched = (self.static_batch is None and self.oracle.per_sample
                        and self.n <= self.max_rows
                        and all(self.axes.get(k) in (0, None) for k in self.inputs))
        # a candidate's work (0: unknown)
        self.work = sum(costs.values()) * self.n if costs else 0
        self.reference = self._forward(self.inputs, np.ones((1, analysis.num_units), np.float32))
        self.base = self.score(self.reference)
        self._check_base()

    def _check_base(self) -> None:
        if not np.isfinite(self.base):
            raise UsageError(f"metric {self.metric.name} of the unpruned model is {self.base} "
                             "on the calibration data; a metric must be finite")

    def score(self, outputs: list[np.ndarray]) -> float:
        """The metric of the gated model's ``outputs`` (all of them, on the calibration data)
        against the unpruned model's."""
        if self.read is None:
            return self.metric(outputs, self.batch, self.reference)
        return self.metric([outputs[i] for i in self.read], self.batch,
                           [self.reference[i] for i in self.read])

    def _forward(self, inputs: dict[str, np.ndarray], gates: np.ndarray) -> list[np.ndarray]:
        """Run the gated model, in chunks of the model's static batch size if it has one."""
        return run_batched(lambda feeds: self.oracle.run(feeds, gates), inputs,
                           axes=self.axes, fixed=self.static_batch,
                           max_rows=None if self.static_batch else self.max_rows,
                           out_axes=self.out_axes)

    def _of_model(self, keep: np.ndarray) -> float:
        if self.metric.on_model == "model":
            return self.metric.value_of(self.metric.fn, self.oracle.baked(keep))
        gates = np.asarray(keep, np.float32).reshape(1, -1)
        return self.metric.value_of(self.metric.fn, lambda feeds: self.oracle.run(feeds, gates))

    def outputs(self, keep: np.ndarray) -> list[np.ndarray]:
        return self._forward(self.inputs, np.asarray(keep, np.float32).reshape(1, -1))

    def _prefixed(self) -> Prefixes | None:
        """The kept prefixes candidates run from (None: no point of the graph saves work).
        Their sessions hold the weights as the oracle's does (initializers: the same bits at
        any thread count, in pool workers too), each its own copy of those after its point:
        the points are those whose copies fit the prefixes' budget. The oracle's session is
        replaced by one that also outputs the points' tensors (whole runs fill bases)."""
        if self.prefixes is None:
            pre = Prefixes(self.oracle.model, self.analysis, self.oracle.output_names,
                           lambda keep: {GATES: keep.reshape(1, -1)}, self.inputs, self.axes,
                           self.static_batch, None if self.static_batch else self.max_rows,
                           self.costs, PREFIX_TENSORS, self.threads, PREFIX_WEIGHTS)
            self.prefixes = pre if pre.points else False
            if pre.points:
                self._outputs_also(pre.model)
                if pre.settle(self.oracle.session, self.analysis.num_units,
                              lambda: self._room_for(pre)):  # the dropped: not output any more
                    self._outputs_also(pre.model)
        if self.prefixes and self.prefixes.unpruned is None:  # given back by close()
            self.prefixes.fill(self.oracle.session, self.analysis.num_units)
        if self.prefixes and not self.prefixes.points:
            self.prefixes.close()
            self.prefixes = False
        return self.prefixes or None

    def _room_for(self, pre: Prefixes) -> bool:
        """Whether a call fits the budget with the points' tensors output too (onnxruntime
        keeps a graph output's memory to the end of the run); the samples a call takes are
        bounded again with them."""
        if not self.per_sample:
            return True
        rows = pre.bound_rows(self.oracle.session, self.per_sample, self.n, self.budget)
        if rows is None:
            return False
        self.max_rows = min(self.max_rows, rows)
        self.batched = self.batched and self.n <= self.max_rows
        return True

    def _outputs_also(self, model) -> None:
        """The oracle's session over ``model`` (the gated model, its outputs first)."""
        new = session(model, threads=self.threads, arena="shared", feed_weights=False,
                      quiet=True)
        self.oracle.session = new

    def evaluate(self, keep: np.ndarray) -> float:
        """The metric with units gated by ``keep`` (1 open, 0 closed; values between allowed)."""
        return float(self.evaluate_many(np.asarray(keep)[None])[0])

    @property
    def reference_bytes(self) -> bytes:
        """The reference serialized whole, for pool workers (made when a pool asks)."""
        ref = self._reference
        return (embed(ref) if isinstance(ref, Skeleton) else ref).SerializeToString()

    def attach(self, pool) -> None:  # noqa: ANN001 - an executors pool (map, close)
        """Score candidate batches with ``pool`` (``executors.make_pool``); None: here."""
        self.close()
        self.pool = pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        if self.prefixes:
            self.prefixes.close()

    def evaluate_many(self, masks: np.ndarray) -> np.ndarray:
        masks = np.asarray(masks, dtype=np.float32).reshape(len(masks), self.analysis.num_units)
        self.evals += len(masks)
        if self.pool is not None and len(masks) > 1:
            return self.pool.map(masks)
        return self.evaluate_local(masks)

    def evaluate_local(self, masks: np.ndarray) -> np.ndarray:
        """Score the masks in this process."""
        masks = np.asarray(masks, dtype=np.float32).reshape(-1, self.analysis.num_units)
        if self.metric.on_model:
            return np.array([self._of_model(m) for m in masks])
        self.scored += len(masks)
        pre = self._prefixed() if self.scored > PREFIX_AFTER and (
            not self.batched or self.work >= PREFIX_MACS) else None
        if pre is None:
            return self._whole(masks)
        # candidates that differ from a kept run only late run from its point; those that
        # would run whole run K at a time where they can (a tiny model's runs are mostly
        # call overhead), else through the prefixes too, to be kept as bases (a path's state)
        late = np.array([pre.starts_late(m) for m in masks])
        if not self.batched or (~late).sum() < 2:
            late[:] = True
        values = np.empty(len(masks))
        for i in np.flatnonzero(late):
            values[i] = self.score(pre.run(self.oracle.session, masks[i]))
        if not late.all():
            values[~late] = self._whole(masks[~late])
        return values

    def _whole(self, masks: np.ndarray) -> np.ndarray:
        """Score the masks, each running the whole gated graph."""
        if not self.batched:
            return np.array([self.score(self.outputs(m)) for m in masks])
        per_call = max(1, self.max_rows // max(self.n, 1))
        values = []
        for lo in range(0, len(masks), per_call):
            chunk = masks[lo:lo + per_call]
            k = len(chunk)
            feeds = {name: v if self.axes.get(name) is None else np.concatenate([v] * k)
                     for name, v in self.inputs.items()}
            try:
                outs = self.oracle.run(feeds, np.repeat(chunk, self.n, axis=0))
            except Exception:  # noqa: BLE001 - onnxruntime refused a gate row per sample
                # a gated tensor whose first axis is not the batch (a Gemm on [batch x
                # tokens, width], as GPT-2's Conv1D layers read it): one candidate a run
                self.batched = False
                return np.array([*values, *self._whole(masks[lo:])])
            for i in range(k):
                part = [sample_slice(o, i * self.n, (i + 1) * self.n, ax)
                        for o, ax in zip(outs, self.out_axes, strict=True)]
                values.append(self.score(part))
        return np.array(values)
