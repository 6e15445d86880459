"""onnxruntime helpers shared by every stage: exact-arithmetic sessions, runs over a batch in
chunks the model accepts, random feeds, element-type tables and the default opset."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from .. import interrupts
from ..errors import UnsupportedModelError, UsageError
from . import arena as shared_arena
from .weights import NP_TYPES, Skeleton, proto, to_skeleton

# Short provider names (CLI, recipes) -> onnxruntime's, and what makes each one available.
PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
PROVIDER_HINTS = {
    "cuda": "install onnxruntime-gpu (pip install 'onnxprune[cuda]') on a machine with an "
            "NVIDIA GPU and its CUDA driver",
    "tensorrt": "install onnxruntime-gpu with NVIDIA TensorRT's libraries (tensorrt on the "
                "library path) on a machine with an NVIDIA GPU",
}


def resolve_providers(spec: str | Sequence[str]) -> list[str]:
    """onnxruntime provider names for short names ("cpu,cuda"); every one must be available
    here (UnsupportedModelError naming what is missing and how to get it)."""
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if not names:
        raise UsageError(f"no execution provider given; choose from {', '.join(PROVIDER_NAMES)}")
    have = ort.get_available_providers()
    out = []
    for name in names:
        full = PROVIDER_NAMES.get(name) or next(
            (v for v in PROVIDER_NAMES.values() if v.lower() == name), None)
        if full is None:
            raise UsageError(f"unknown provider {name!r}; choose from {', '.join(PROVIDER_NAMES)}")
        if full not in have:
            short = next(k for k, v in PROVIDER_NAMES.items() if v == full)
            raise UnsupportedModelError(
                f"execution provider {short} ({full}) is not available here: onnxruntime "
                f"{ort.__version__} offers {', '.join(have)}; {PROVIDER_HINTS[short]}")
        out.append(full)
    return out


def providers_option(value: str | Sequence[str]) -> list[str]:
    """The ``providers`` run option: short or full names, each available here."""
    if not isinstance(value, (str, list, tuple)):
        raise ValueError(f"expected provider names, got {value!r}")
    return resolve_providers(value)


def skeleton(model: onnx.ModelProto | Skeleton) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The model without its large weights (declared as external data) and those weights as
    arrays: onnxruntime takes them as external initializers, so building a session neither
    serializes nor parses them (a 100 MB model: 0.09 s instead of 0.37 s). A ``Skeleton`` is
    one already (its arrays are not copied); a ModelProto's weights are copied out of it."""
    if isinstance(model, Skeleton):
        return model.model, model.arrays
    sk = to_skeleton(model)
    return sk.model, sk.arrays


def weightless(model: onnx.ModelProto | Skeleton) -> onnx.ModelProto:
    """The model with its large weights turned into graph inputs of the same type and shape:
    what ``onnx.checker``'s full check (structure and shape inference) needs, without copying
    or checking the weights' bytes."""
    return weights_as_inputs(model)[0]


def weights_as_inputs(model: onnx.ModelProto | Skeleton
                      ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``weightless``'s model and the weights it took out (name -> array)."""
    bare, arrays = skeleton(model)
    if isinstance(model, Skeleton):  # its own proto stays as it is
        copy = onnx.ModelProto()
        copy.CopyFrom(bare)
        bare = copy
    kept = [t for t in bare.graph.initializer if t.name not in arrays]
    big = [t for t in bare.graph.initializer if t.name in arrays]
    del bare.graph.initializer[:]
    bare.graph.initializer.extend(kept)
    declared = {i.name for i in bare.graph.input}
    for t in big:
        if t.name not in declared:
            bare.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type,
                                                                       list(t.dims)))
    return bare, arrays


def computing(model: onnx.ModelProto | Skeleton, names: Sequence[str]
              ) -> onnx.ModelProto | Skeleton:
    """``model`` cut down to the nodes that compute the tensors ``names``, which become its
    only outputs: onnxruntime runs every node of a graph whatever a run asks for (MiniLM's
    first query projection alone: 0.46 s for 64 sentences from the whole model, 5 ms from
    its 17 nodes). Inputs and initializers nothing left reads are dropped (the inputs all
    stay when none is read)."""
    base = proto(model)
    need = set(names)
    keep = []
    for node in reversed(base.graph.node):
        if any(o in need for o in node.output):
            keep.append(node)
            need.update(i for i in node.input if i)
            need.update(subgraph_reads(node))
    out = onnx.ModelProto()
    out.CopyFrom(base)
    graph = out.graph
    del graph.node[:]
    graph.node.extend(reversed(keep))
    del graph.output[:]
    graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    for field in (graph.initializer, graph.sparse_initializer, graph.input):
        kept = [t for t in field if (t.values.name if field is graph.sparse_initializer
                                     else t.name) in need]
        if field is graph.input and not kept:
            continue  # tensors of constants alone: the inputs stay (a run is fed something)
        del field[:]
        field.extend(kept)
    if isinstance(model, Skeleton):
        return Skeleton(out, {k: v for k, v in model.arrays.items() if k in need})
    return out


def subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Every tensor name the node's subgraphs (If/Loop/Scan bodies) read, outer ones among
    them."""
    out: set[str] = set()
    for attr in node.attribute:
        for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for inner in g.node:
                out.update(i for i in inner.input if i)
                out.update(subgraph_reads(inner))
    return out


class Session(ort.InferenceSession):
    """onnxruntime's session over ``bare``, feeding ``weights`` (large weights held as graph
    inputs) on every run: onnxruntime copies external initializers into buffers of its own (a
    second copy of the weights per session); inputs it reads where they are (reference
    arithmetic on the CPU only: no optimizations, nothing would fold or prepack them).
    ``copies``: the outputs are returned as arrays of their own (a session of the shared arena,
    whose outputs would otherwise hold the arena region they lie in for as long as they are
    kept). ``held``: with copies, the outputs copied (None: all); the others are returned as
    onnxruntime gives them, for a caller that drops them before the next run (a candidate's
    outputs, scored and gone: PP-OCR rec's search, 114 MB of outputs a run, 38.5 -> 37.3 s)."""

    def __init__(self, bare: onnx.ModelProto, opts: ort.SessionOptions,
                 providers: Sequence[str], weights: dict[str, np.ndarray] | None = None,
                 copies: bool = False):
        super().__init__(bare.SerializeToString(), opts, providers=list(providers))
        self._weights, self._copies = weights or {}, copies
        self.held: frozenset[str] | None = None

    def run(self, output_names, input_feed, run_options=None):
        feeds = {**input_feed, **self._weights} if self._weights else input_feed
        out = super().run(output_names, feeds, run_options)
        if self._copies:
            names = output_names or [o.name for o in super().get_outputs()]
            out = [np.array(o) if isinstance(o, np.ndarray) and (
                self.held is None or name in self.held) else o
                for name, o in zip(names, out, strict=True)]
        return out

    def get_inputs(self):
        return [i for i in super().get_inputs() if i.name not in self._weights]


def session(model: onnx.ModelProto | Skeleton, providers: Sequence[str] | None = None,
            threads: int | None = None, quiet: bool = False,
            optimized: bool = False, arena: bool | str = True,
            feed_weights: bool = True, spinning: bool = True) -> ort.InferenceSession:
    """An onnxruntime session with graph optimizations off (exact reference arithmetic);
    ``threads``: intra-op threads (None: onnxruntime's choice); ``quiet``: not even errors
    logged (trial runs that are expected to fail); ``optimized``: onnxruntime's optimizations
    on, as a deployed model runs (quantized models: Q/DQ pairs fused into integer kernels);
    ``arena=False``: no memory arena (buffers freed after each run; for calls of many
    different sizes, whose arena chunks would otherwise add up); ``"shared"``: the arena the
    process's search sessions share (``ir.arena``; given back by ``ir.memory.release``).
    Large weights are fed as inputs on the CPU in reference arithmetic (``Session``: held
    once), else go in as external initializers (``skeleton``). ``feed_weights=False``: always
    initializers, whose prepacked kernels give the same bits at any thread count (a search's
    candidates scored in this process and in pool workers must agree). ``spinning=False``:
    the intra-op threads sleep between runs (sessions timed alternately do not spin against
    each other)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    shared = arena == "shared" and shared_arena.use(opts)
    if not arena or arena == "shared" and not shared:
        opts.enable_cpu_mem_arena = False
        opts.enable_mem_pattern = False
    opts.log_severity_level = 4 if quiet else 3
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    providers = list(providers or ["CPUExecutionProvider"])
    if feed_weights and not optimized and providers == ["CPUExecutionProvider"]:
        bare, weights = weights_as_inputs(model)
        if weights:
            return Session(bare, opts, providers, weights, copies=shared)
    bare, arrays = skeleton(model)
    values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays.values()]
    if arrays:
        opts.add_external_initializers(list(arrays), values)
    sess = (Session(bare, opts, providers, copies=True) if shared else
            ort.InferenceSession(bare.SerializeToString(), opts, providers=providers))
    sess._onnxprune_weights = (arrays, values)  # noqa: SLF001 - they must outlive the session
    return sess


def default_opset(model: onnx.ModelProto | Skeleton) -> int | None:
    """The default-domain opset the model imports (None if it imports none)."""
    model = proto(model)
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def graph_inputs(model: onnx.ModelProto | Skeleton) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds (not initializers listed as inputs, as IR < 4 writes them)."""
    model = proto(model)
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def static_batch(sess: ort.InferenceSession | onnx.ModelProto, feeds: dict[str, np.ndarray],
                 axes: dict[str, int | None] | None = None) -> int | None:
    """The fixed size of the fed inputs' sample axes, if an input has one (a model exported
    for one sample runs one sample at a time); of a session's inputs or a model's declared
    ones."""
    axes = axes or {}
    if isinstance(sess, onnx.ModelProto):
        inputs = [(i.name, [d.dim_value if d.HasField("dim_value") else None
                            for d in i.type.tensor_type.shape.dim]) for i in sess.graph.input]
    else:
        inputs = [(i.name, i.shape) for i in sess.get_inputs()]
    for name, shape in inputs:
        ax = axes.get(name, 0)
        if (name in feeds and ax is not None and shape and len(shape) > ax
                and isinstance(shape[ax], int) and shape[ax] > 0):
            return int(shape[ax])
    return None


def one_sample(feeds: dict[str, np.ndarray], axes: dict[str, int | None]
               ) -> dict[str, np.ndarray]:
    """The first sample of every feed along its sample axis (feeds without one stay whole)."""
    return {k: v if axes.get(k) is None else np.take(v, [0], axis=axes[k])
            for k, v in feeds.items()}


def run_batched(run, feeds: dict[str, np.ndarray], names: Sequence[str] | None = None,
                max_rows: int | None = None, axes: dict[str, int | None] | None = None,
                fixed: int | None = None, out_axes: Sequence[int] | None = None
                ) -> list[np.ndarray]:
    """Run ``run`` (a session, or ``feeds -> outputs``) over the samples of ``feeds`` in chunks:
    of the model's fixed batch when it has one (``fixed``, or read from the session; the last
    chunk padded by repeating its last sample, the padding dropped from the outputs), else of
    ``max_rows`` samples (None: all at once). ``axes``: each input's sample axis (default 0;
    None: fed whole to every chunk). Outputs are joined along their sample axes: ``out_axes``,
    or a session's declared ones (``output_axes``; a sequence-first ``[time, batch, ...]``
    output: 1), else 0."""
    if isinstance(run, ort.InferenceSession):
        sess = run
        fixed = fixed or static_batch(sess, feeds, sample_axes(feeds, axes))
        out_names = list(names) if names is not None else [o.name for o in sess.get_outputs()]
        out_axes = out_axes if out_axes is not None else output_axes(sess, out_names, axes)
        run = lambda f: sess.run(out_names, f, interrupts.run_options())  # noqa: E731
    parts = []
    for chunk, valid in chunks(feeds, max_rows, axes, fixed):
        outs = run(chunk)
        at = out_axes if out_axes is not None else [0] * len(outs)
        parts.append(outs if valid is None else [
            sample_slice(o, 0, valid, ax) for o, ax in zip(outs, at, strict=True)])
    return joined(parts, out_axes)


def output_axes(model, names: Sequence[str] | None = None,
                axes: Mapping[str, int | None] | None = None) -> list[int]:
    """Each output's sample axis, of a session or a model: where its declared shape names the
    dimension the inputs hold their samples on (``axes``: each input's sample axis, default
    0; a ``[time, batch, classes]`` output of batch-first inputs: 1), else 0."""
    if isinstance(model, ort.InferenceSession):
        inputs = {i.name: i.shape or [] for i in model.get_inputs()}
        declared = {o.name: o.shape or [] for o in model.get_outputs()}
    else:
        def dims(vi):
            return [d.dim_param or None for d in vi.type.tensor_type.shape.dim]
        inputs = {i.name: dims(i) for i in proto(model).graph.input}
        declared = {o.name: dims(o) for o in proto(model).graph.output}
    at = {k: (axes or {}).get(k, 0) for k in inputs}
    batch = {shape[at[k]] for k, shape in inputs.items() if at[k] is not None
             and len(shape) > at[k] and isinstance(shape[at[k]], str)} - {""}
    return [next((i for i, d in enumerate(declared.get(n, [])) if isinstance(d, str)
                  and d in batch), 0) for n in (list(declared) if names is None else names)]


def sample_slice(a: np.ndarray, start: int, stop: int, axis: int = 0) -> np.ndarray:
    """Samples ``start:stop`` of ``a`` along its sample ``axis`` (a view)."""
    return a[(slice(None),) * axis + (slice(start, stop),)]


def joined(parts: Sequence[Sequence[np.ndarray]], axes: Sequence[int] | None = None
           ) -> list[np.ndarray]:
    """Chunks' outputs (``parts[chunk][output]``) joined along each output's sample axis."""
    if len(parts) == 1:
        return list(parts[0])
    axes = list(axes) if axes is not None else [0] * len(parts[0])
    return [np.concatenate(p, axis=ax) for p, ax in zip(zip(*parts, strict=True), axes,
                                                         strict=True)]


def sample_axes(feeds: dict[str, np.ndarray], axes: dict[str, int | None] | None
                ) -> dict[str, int | None]:
    """Each feed's sample axis: as given, else 0 (None for a scalar: fed whole)."""
    return {k: (axes or {}).get(k, 0 if np.ndim(v) else None) for k, v in feeds.items()}


def chunks(feeds: dict[str, np.ndarray], max_rows: int | None = None,
           axes: dict[str, int | None] | None = None, fixed: int | None = None
           ) -> Iterator[tuple[dict[str, np.ndarray], int | None]]:
    """``(chunk, valid)``: the feeds in the chunks ``run_batched`` runs, each with how many of
    its leading output rows are real samples (the rest pad a fixed batch); ``valid`` is None
    when the feeds go whole (outputs as they come)."""
    axes = sample_axes(feeds, axes)
    sizes = {np.shape(v)[axes[k]] for k, v in feeds.items() if axes[k] is not None}
    n = sizes.pop() if sizes else 1
    step = fixed or (max_rows if max_rows and max_rows < n else None)
    if step is None or (fixed is not None and n == fixed):
        yield feeds, None
        return
    for lo in range(0, n, step):
        idx = np.arange(lo, min(lo + step, n))
        valid = len(idx)
        if fixed is not None and valid < fixed:
            idx = np.concatenate([idx, np.full(fixed - valid, idx[-1])])
        yield {k: v if axes[k] is None else np.take(v, idx, axis=axes[k])
               for k, v in feeds.items()}, valid


def random_feeds(
    model: onnx.ModelProto, seed: int = 0, batch: int = 2,
    shapes: dict[str, Sequence[int]] | None = None, *, samples: bool = False,
) -> dict[str, np.ndarray]:
    """Random inputs for every graph input; symbolic batch dims get ``batch``. ``samples``:
    ``batch`` samples even where the model fixes the leading dimension to 1 (calibration data
    for a model exported for one sample)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in graph_inputs(model):
        tt = vi.type.tensor_type
        dims = list(shapes[vi.name]) if shapes and vi.name in shapes else _dims(vi.name, tt, batch)
        if samples and dims and tt.shape.dim[0].dim_value == 1 and not (
                shapes and vi.name in shapes):
            dims[0] = batch
        dtype = NP_TYPES.get(tt.elem_type, np.float32)
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(dims).astype(dtype)
        elif dtype == np.bool_:
            feeds[vi.name] = rng.integers(0, 2, dims).astype(bool)
        else:
            feeds[vi.name] = rng.integers(0, 2, dims).astype(dtype)
    return feeds


def _dims(name: str, tt, batch: int) -> list[int]:
    dims = []
    for i, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(d.dim_value)
        elif i == 0:
            dims.append(batch)
        else:
            raise UsageError(
                f"input {name} has a dynamic dimension {i}; give its shape with --input-shape"
            )
    return dims
