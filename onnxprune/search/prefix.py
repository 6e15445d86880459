"""Candidates run from where they differ from a candidate already run.

Two candidates that agree on every unit gated before some node compute the same tensors up
to it (a refit too changes only layers behind the gates of the units it lost). A search
asks for such pairs all the time: a sensitivity curve point differs from the unpruned model
in one group, a path step from the state the path has reached in one group. So every run
keeps the tensors live across a few points of the graph (``points``: gate positions spread
by the work before them); a candidate then starts at the latest point before its first
difference from a kept run (a *base*), fed that base's tensors there, in a session of the
nodes after the point (made once per point; by default it reads the model's weights where they
are, as inputs: onnxruntime copies initializers into each session, a copy of the weights per
point; with ``weights`` given, sessions hold them as initializers, within that many bytes).
Those runs keep their own tensors at the later points, and become bases too. The unpruned
model is the first base: curve points of PP-OCR rec's neck run a fifth of the recognizer.

A point with less than ``MIN_SHARE`` of the model's work before it is not one (a session
there saves too little). What bases keep is bounded by ``BUDGET`` bytes (least recently
used out, and at most ``MAX_BASES`` of them; the unpruned base is kept)."""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from .. import interrupts
from ..analysis.model import ChannelAnalysis
from ..ir.runtime import (
    Session,
    chunks,
    joined,
    one_sample,
    output_axes,
    sample_slice,
    session,
    subgraph_reads,
)
from ..ir.weights import Skeleton, proto
from .memory import RUNTIME_FACTOR, room, tensor_bytes

MIN_SHARE = 0.2  # of the model's work (MACs) before the first point
SPACING = 0.02  # of the model's work between consecutive points
# a point may come this much of the model's work before the gate it serves, where fewer
# bytes are live (PP-OCR rec: its blocks' starts hold a third of what their hidden layers do)
SLACK = 0.08
BUDGET = 256 << 20  # bytes of tensors the bases keep, the unpruned one's among them
BASE_SHARE = 1 / 2  # of the budget, what one base's tensors may take (the points kept)
# bases kept at most, however small: each candidate is compared with every one, and a small
# model's thousands of bases made a soft search's finite differences 10x slower
MAX_BASES = 32


@dataclass
class _Base:
    keep: np.ndarray  # the candidate's gates
    kept: dict[int, list[list[np.ndarray]]]  # point -> its live tensors, chunk by chunk


@dataclass
class _Suffix:
    session: object
    inputs: set[str]  # what it reads as graph inputs
    outputs: list[str]  # what it computes: the model's outputs, then later points' tensors


class Prefixes:
    """``run(keep)``: the outputs ``names`` of ``model`` (the gated reference as fed) on
    ``inputs`` (chunked as ``run_batched`` chunks them) with the feeds ``feeds(keep)`` (gates,
    weights) added, computed from the latest point where a kept base agrees."""

    def __init__(self, model: onnx.ModelProto | Skeleton, analysis: ChannelAnalysis,
                 names: list[str], feeds: Callable[[np.ndarray], dict[str, np.ndarray]],
                 inputs: Mapping[str, np.ndarray], axes: Mapping, fixed: int | None,
                 max_rows: int | None, costs: Mapping[str, float] | None = None,
                 budget: int | None = None, threads: int | None = None,
                 weights: int | None = None):
        """``costs``: work per node (by name; MACs), to place points; nodes not named cost
        nothing (gates, elementwise ops). ``budget``: bytes of tensors the bases keep (None:
        ``BUDGET``).
        ``threads``: the suffix sessions' intra-op threads (None: onnxruntime's choice).
        ``weights``: None, the suffix sessions read the weights where they are (as inputs);
        else each holds its own copy of those it reads (initializers: the same bits at any
        thread count), and the points, the latest first, are those whose copies fit these
        many bytes together."""
        self._model, self.names, self.feeds = model, list(names), feeds
        self.session_kw = {"threads": threads, "feed_weights": weights is None}
        self.inputs, self.axes, self.fixed, self.max_rows = inputs, dict(axes), fixed, max_rows
        self.budget = room(BUDGET if budget is None else budget, 0.1)
        graph = proto(model).graph
        nodes = list(graph.node)
        position = {n.name: i for i, n in enumerate(nodes)}
        work = np.array([float((costs or {}).get(n.name, 0.0)) for n in nodes])
        total = work.sum()
        share = (np.concatenate([[0.0], np.cumsum(work)[:-1]]) / total if total > 0
                 else np.arange(len(nodes)) / max(len(nodes), 1))
        self.out_axes = output_axes(model, self.names, self.axes)  # where each output's samples are
        self.end = len(nodes)
        self.first = np.full(analysis.num_units, self.end, np.int64)  # each unit's first gate
        for i, gate in enumerate(analysis.gates):
            at = position.get(f"{gate.node}/onnxprune_gate{i}_gather", 0)
            self.first[gate.units] = np.minimum(self.first[gate.units], at)
        produced, last = uses(graph, nodes)
        sizes = tensor_bytes(model, one_sample(inputs, self.axes))
        held = live_bytes(produced, last, sizes, self.end)
        self.points: list[int] = []
        for g in sorted({int(b) for b in self.first if b < self.end}):
            if share[g] < MIN_SHARE:
                continue
            # the point that holds the least within SLACK of the work before the gate
            lo = int(np.searchsorted(share, share[g] - SLACK))
            p = max(range(max(lo, 1), g + 1), key=lambda q: (-held[q], q))
            if not self.points or share[p] >= share[self.points[-1]] + SPACING:
                self.points.append(p)
        if weights is not None:  # the suffixes' own copies of the weights within their budget
            self.points = _within(self.points, suffix_weights(model, nodes, self.points),
                                  room(weights, 0.1))
        self.live = {p: [t for t, at in produced.items() if at < p <= last.get(t, -1)]
                     for p in self.points}
        self.unpruned: _Base | None = None
        self.bases: OrderedDict[bytes, _Base] = OrderedDict()
        self.suffixes: dict[int, _Suffix] = {}
        self.kept = 0  # bytes the bases hold
        self.stats = {"whole": 0, "suffix": 0, "sessions": 0, "session_seconds": 0.0}

    @property
    def model(self) -> onnx.ModelProto | Skeleton:
        """The model that also outputs every point's live tensors (for the session ``run``
        is given: a whole run keeps them at no extra work)."""
        extra = self._later(-1)
        if not extra:
            return self._model
        m = onnx.ModelProto()
        m.CopyFrom(proto(self._model))
        m.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in extra)
        return Skeleton(m, self._model.arrays) if isinstance(self._model, Skeleton) else m

    def _later(self, p: int) -> list[str]:
        """The live tensors of the points after ``p`` that are not outputs already."""
        seen = set(self.names)
        return [t for q in self.points if q > p for t in self.live[q]
                if not (t in seen or seen.add(t))]

    def run(self, sess, keep: np.ndarray) -> list[np.ndarray]:
        """The outputs with ``keep``'s gates; ``sess`` runs the whole of ``model``."""
        keep = np.asarray(keep, np.float32).ravel()
        if not self.points:
            self.stats["whole"] += 1
            return self._run(sess, keep, None, None)[0]
        if self.unpruned is None:
            self.fill(sess, len(keep))
            if not self.points:
                return self.run(sess, keep)
        best, start = self._start(keep)
        if best is None:
            self.stats["whole"] += 1
            outputs, base = self._run(sess, keep, None, None)
        else:
            self.stats["suffix"] += 1
            outputs, base = self._run(self._suffix(start), keep, start, best)
        self._remember(base)
        return outputs

    def fill(self, sess, units: int) -> None:
        """Run the unpruned model (``units`` gates open), the first base: its points kept
        within the budget (none, where its tensors are too large)."""
        keep = np.ones(units, np.float32)
        self.unpruned = self._trimmed(self._run(sess, keep, None, None)[1])

    def settle(self, sess, units: int, fits: Callable[[], bool]) -> bool:
        """The first fill (``sess`` runs ``model`` with every point): the points the
        unpruned run keeps, none where ``fits()`` says a call no longer fits with their
        tensors. Whether the points changed: ``model`` then outputs fewer tensors, and the
        caller's session should be made again over it (onnxruntime keeps a graph output's
        memory to the end of every run)."""
        points = list(self.points)
        if points:
            self.fill(sess, units)
            if self.points and not fits():
                self.points = []
                self.close()
        return self.points != points

    def held_per_sample(self, samples: int) -> float:
        """Bytes a run outputs besides the model's outputs, per sample (the points' tensors,
        as the unpruned run of ``samples`` samples left them)."""
        kept = self.unpruned.kept if self.unpruned is not None else {}
        return sum(a.nbytes for q in self.points for chunk in kept.get(q, ()) for a in chunk
                   ) / max(samples, 1)

    def bound_rows(self, sess, per_sample: float, samples: int, budget: int) -> int | None:
        """The samples a call of ``sess`` (over ``model``, after ``fill``) may take within
        ``budget`` with the points' tensors output too (onnxruntime keeps a graph output's
        memory to the end of the run; ``per_sample``: the model's own activations), the kept
        tensors filled again in chunks of as many where that is fewer than before; None: not
        even one call fits (a fixed batch's) with them."""
        per = per_sample + self.held_per_sample(samples)
        rows = int(budget // max(int(per * RUNTIME_FACTOR), 1))
        if rows < (self.fixed or 1):
            return None
        if not self.fixed and rows < (self.max_rows or rows + 1):
            self.max_rows = rows  # kept tensors are per chunk: filled again in these chunks
            self.close()
            self.fill(sess, len(self.first))
        return rows

    def starts_late(self, keep: np.ndarray) -> bool:
        """``keep`` would run from a kept point (after ``fill``), not whole."""
        return self._start(np.asarray(keep, np.float32).ravel())[0] is not None

    def _start(self, keep: np.ndarray) -> tuple[_Base | None, int]:
        """The base to run ``keep`` from and the point there (None, -1: run it whole)."""
        best, start = None, -1
        for base in [self.unpruned, *reversed(self.bases.values())]:
            differ = self.first[base.keep != keep].min(initial=self.end)
            at = bisect.bisect_right(self.points, differ) - 1  # the last point at or before
            if at >= 0 and self.points[at] > start:
                best, start = base, self.points[at]
        return best, start

    def _run(self, sess, keep: np.ndarray, start: int | None, base: _Base | None
             ) -> tuple[list[np.ndarray], _Base]:
        """Run the whole model (``sess``, no ``base``) or the suffix from point ``start`` (a
        ``_Suffix``, fed ``base``'s tensors there) chunk by chunk; the outputs and, as a new
        base, the tensors at the later points."""
        after = -1 if start is None else start
        later = [q for q in self.points if q > after]
        if base is None:
            run, outputs, reads = sess, self.names + self._later(after), None
        else:
            run, outputs, reads = sess.session, sess.outputs, sess.inputs
        fed = self.feeds(keep)
        rows, parts = [], []
        for i, (chunk, valid) in enumerate(self._chunks()):
            values = {**chunk, **fed}
            if base is not None:
                values.update(zip(self.live[start], base.kept[start][i], strict=True))
            feeds = values if reads is None else {k: v for k, v in values.items() if k in reads}
            # outputs made before the point are the base's, among the values fed
            got = {**values, **dict(zip(outputs, run.run(outputs, feeds,
                                                         interrupts.run_options()), strict=True))}
            row = [got[n] for n in self.names]
            rows.append(row if valid is None else [sample_slice(o, 0, valid, ax) for o, ax
                                                   in zip(row, self.out_axes, strict=True)])
            parts.append({q: [got[t] for t in self.live[q]] for q in later})
        kept = {q: [part[q] for part in parts] for q in later}
        if base is not None:
            kept.update({q: base.kept[q] for q in self.points if q <= start})
        return joined(rows, self.out_axes), _Base(keep.copy(), kept)

    def _trimmed(self, base: _Base) -> _Base:
        """The unpruned base with the points it keeps within ``BASE_SHARE`` of the budget,
        the latest first (they save the most work per run, and a network mostly narrows its
        activations as it goes), each that does not fit passed over for earlier ones that
        may (a detector's neck widens again: ddddocr's kept only its last quarter, and its
        backbone's candidates ran whole); the other points dropped."""
        room_left, points = self.budget * BASE_SHARE, []
        for q in reversed(self.points):  # (a sequence or optional value: not kept)
            size = sum(a.nbytes if isinstance(a, np.ndarray) else np.inf
                       for chunk in base.kept[q] for a in chunk)
            if size > room_left:
                continue
            room_left -= size
            points.append(q)
        self.points = sorted(points)
        return _Base(base.keep, {q: base.kept[q] for q in self.points})

    def _remember(self, base: _Base) -> None:
        """Keep ``base``, the oldest others out while the bases hold more than the budget (a
        base shares the tensors before its start with the one it ran from: counted once)."""
        key = base.keep.tobytes()
        self.bases.pop(key, None)
        self.bases[key] = base
        while len(self.bases) > MAX_BASES:
            self.bases.popitem(last=False)
        self.kept = self._held()
        while self.kept > self.budget and self.bases:
            self.bases.popitem(last=False)
            self.kept = self._held()

    def _held(self) -> int:
        arrays = {id(a): a.nbytes for b in [self.unpruned, *self.bases.values()] if b
                  for parts in b.kept.values() for chunk in parts for a in chunk}
        return sum(arrays.values())

    def _suffix(self, p: int) -> _Suffix:
        got = self.suffixes.get(p)
        if got is None:
            start = time.perf_counter()
            types = {t: a.dtype for t, a in zip(self.live[p], self.unpruned.kept[p][0],
                                                strict=True)}
            model = suffix(self._model, p, types, self.names + self._later(p))
            sess = session(model, arena="shared", quiet=True, **self.session_kw)
            if isinstance(sess, Session):  # only what the bases keep outlives the run
                sess.held = frozenset(t for q in self.points if q > p for t in self.live[q])
            got = self.suffixes[p] = _Suffix(sess, {i.name for i in sess.get_inputs()},
                                             [o.name for o in sess.get_outputs()])
            self.stats["sessions"] += 1
            self.stats["session_seconds"] += time.perf_counter() - start
        return got

    def _chunks(self):
        return chunks(dict(self.inputs), self.max_rows, self.axes, self.fixed)

    def close(self) -> None:
        self.unpruned = None
        self.bases.clear()
        self.suffixes.clear()
        self.kept = 0


def suffix(model: onnx.ModelProto | Skeleton, p: int, live: Mapping[str, np.dtype],
           outputs: list[str], end: int | None = None) -> onnx.ModelProto | Skeleton:
    """The nodes of ``model`` from node ``p`` on (to node ``end``, excluded; None: the last),
    reading the tensors ``live`` (name: element type) as graph inputs of any shape,
    outputting those of ``outputs`` they compute."""
    base = proto(model)
    nodes = list(base.graph.node)[p:end]
    reads = {i for n in nodes for i in n.input if i} | {
        t for n in nodes for t in subgraph_reads(n)}
    made = {o for n in nodes for o in n.output}
    m = onnx.ModelProto()
    m.CopyFrom(base)
    g = m.graph
    del g.node[:]
    g.node.extend(nodes)
    inputs = [i for i in base.graph.input if i.name in reads]
    inputs += [helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(dtype), None)
               for t, dtype in live.items() if t in reads]
    del g.input[:]
    g.input.extend(inputs)
    declared = {o.name: o for o in base.graph.output}
    del g.output[:]
    g.output.extend(declared.get(t) or helper.make_empty_tensor_value_info(t)
                    for t in outputs if t in made)
    kept = [t for t in g.initializer if t.name in reads]
    del g.initializer[:]
    g.initializer.extend(kept)
    vis = [vi for vi in g.value_info if vi.name not in live]
    del g.value_info[:]
    g.value_info.extend(vis)
    if isinstance(model, Skeleton):
        return Skeleton(m, {k: v for k, v in model.arrays.items() if k in reads})
    return m


def suffix_weights(model: onnx.ModelProto | Skeleton, nodes: list[onnx.NodeProto],
                   points: list[int]) -> list[int]:
    """The bytes of the top-level weights the nodes from each point on read (what a suffix's
    session copies; an estimate: initializers inside subgraphs not counted)."""
    arrays = model.arrays if isinstance(model, Skeleton) else {}
    size = {t.name: arrays[t.name].nbytes if t.name in arrays else _nbytes(t)
            for t in proto(model).graph.initializer}
    out = []
    for p in points:
        reads = {i for n in nodes[p:] for i in [*n.input, *subgraph_reads(n)] if i in size}
        out.append(sum(size[t] for t in reads))
    return out


def _nbytes(t: onnx.TensorProto) -> int:
    if t.raw_data:
        return len(t.raw_data)
    count = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
    return count * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def _within(points: list[int], weights: list[int], budget: int) -> list[int]:
    """The latest points whose weights fit ``budget`` together."""
    kept = []
    for p, w in zip(reversed(points), reversed(weights), strict=True):
        if w > budget:
            break
        budget -= w
        kept.append(p)
    return sorted(kept)


def uses(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]
          ) -> tuple[dict[str, int], dict[str, int]]:
    """Where each computed tensor is made (node index) and last read (the graph's outputs:
    after the last node)."""
    produced, last = {}, {}
    for i, n in enumerate(nodes):
        for t in [*n.input, *subgraph_reads(n)]:
            if t:
                last[t] = i
        for o in n.output:
            if o:
                produced[o] = i
    for o in graph.output:
        last[o.name] = len(nodes)
    return produced, last


def live_bytes(produced: dict[str, int], last: dict[str, int], sizes: dict[str, int],
                end: int) -> np.ndarray:
    """The bytes live across each node position (made before it, read at or after it) for
    one sample; a tensor of unknown size counts as the largest known."""
    unknown = max(sizes.values(), default=1)
    delta = np.zeros(end + 2, np.int64)
    for t, at in produced.items():
        if last.get(t, -1) > at:
            delta[at + 1] += sizes.get(t, unknown)
            delta[last[t] + 1] -= sizes.get(t, unknown)
    return np.cumsum(delta)[:end + 1]
