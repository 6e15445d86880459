"""Shapes that ONNX's own inference leaves open, from onnxruntime's symbolic shape inference.

Exporters compute shapes in the graph: torch's ``expand(-1, 1, s, s)`` of an attention mask
becomes ``Expand(mask, Where(Equal(Concat(Shape...), -1), 1, Concat(Shape...)))``, and ONNX's
data propagation stops at the ``Where``, so the mask's head axis (1, a broadcast) is unknown and
would freeze every head it meets. onnxruntime's symbolic inference evaluates such shape
sub-graphs with sympy. It runs only when the analysis froze channels for a reason a shape can
lift and ONNX's inference left a dimension around such ops unnamed (it costs seconds on large
graphs); it may only
*add* what ONNX did not know: a static size, or a dimension shown to be an expression of the
inputs' named ones (``sequence``, ``batch*sequence``: a Reshape can then tell where channels go).
Verification still runs the rewritten model at two sets of shapes, so a wrong fact cannot reach
a written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import re

import onnx
import onnx_graphsurgeon as gs

Dim = int | str | None


def _dims(vi: onnx.ValueInfoProto) -> list[Dim] | None:
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in tt.shape.dim]


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def over_inputs(dim: Dim, names: set[str]) -> bool:
    """A size or an expression of the inputs' named dimensions only (``batch*sequence``)."""
    return isinstance(dim, int) or isinstance(dim, str) and all(
        w in names for w in _NAME.findall(dim))


def input_symbols(graph: gs.Graph) -> set[str]:
    return {d for t in graph.inputs for d in (t.shape or []) if isinstance(d, str)}


# Where a dimension ONNX left open changes what the analysis can tell: broadcasts built from
# computed shapes (attention masks), reshapes with computed targets, products of activations.
# Open spatial sizes of convolutional nets (every Conv output under a dynamic height and width)
# need no symbolic inference, which costs seconds on such graphs.
NEEDS = ("Expand", "Where", "Reshape", "MatMul", "Einsum", "MatMulNBits")


# freeze reasons a better-known shape can lift (rules/: elementwise, reshape, linear, expand)
SHAPE_BOUND = ("has no channel map", "not a known constant", "is scattered", "does not match",
               "broadcast", "rank unknown", "unknown")


def shape_bound(analysis) -> bool:
    """Some group froze for a reason a better-known shape could lift."""
    return any(g.frozen and g.reason and any(r in g.reason for r in SHAPE_BOUND)
               for g in analysis.groups)


def could_refine(graph: gs.Graph) -> bool:
    return _open(graph, input_symbols(graph))


def _open(graph: gs.Graph, names: set[str]) -> bool:
    """An op of ``NEEDS`` touches a variable with a dimension ONNX could not tie to a size, an
    input's symbol or an expression of them (``floor(height/2) + 1`` counts as known)."""
    def unknown(t) -> bool:  # None, or a bare name of no input (an exporter's "unk__7")
        return isinstance(t, gs.Variable) and (t.shape is None or any(
            d is None or isinstance(d, str) and d.isidentifier() and d not in names
            for d in t.shape))

    for node in graph.nodes:
        if node.op in NEEDS and any(unknown(t) for t in [*node.inputs, *node.outputs]):
            if node.op == "Reshape" and isinstance(node.inputs[1], gs.Constant):
                continue  # a constant target: the input's shape decides, known or not
            return True
    return False


# the last few graphs (normalization repeats): shapes, and element types (contrib ops' outputs,
# which ONNX's inference leaves untyped)
_CACHE: dict[bytes, tuple[dict[str, list[Dim]], dict[str, int]]] = {}


def _key(model: onnx.ModelProto) -> bytes:
    """The skeleton's nodes and inputs (weights are typed inputs there): the same graph gives
    the same shapes, whatever value_info an earlier inference left."""
    h = hashlib.sha1()
    for part in [*model.graph.node, *model.graph.input, *model.graph.initializer,
                 *model.opset_import]:
        h.update(part.SerializeToString(deterministic=True))
    return h.digest()


def symbolic_shapes(model: onnx.ModelProto) -> dict[str, list[Dim]]:
    """Every tensor's shape by onnxruntime's symbolic inference; {} when it cannot run."""
    return _inferred(model)[0]


def _inferred(model: onnx.ModelProto) -> tuple[dict[str, list[Dim]], dict[str, int]]:
    key = _key(model)
    if key not in _CACHE:
        if len(_CACHE) >= 4:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _infer(model)
    return _CACHE[key]


def _infer(model: onnx.ModelProto) -> tuple[dict[str, list[Dim]], dict[str, int]]:
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:  # pragma: no cover - onnxruntime ships it
        return {}
    log = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
    level, log.level = log.level, logging.CRITICAL
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            out = _complete(SymbolicShapeInference, model)
    except Exception:  # best effort, like ONNX's: unknown ops, custom domains
        return {}, {}
    finally:
        log.level = level
    if out is None:
        return {}, {}
    infos = list(out.graph.value_info) + list(out.graph.output)
    return ({vi.name: d for vi in infos if (d := _dims(vi)) is not None},
            {vi.name: t for vi in infos if (t := vi.type.tensor_type.elem_type)})


def _complete(inference, model: onnx.ModelProto) -> onnx.ModelProto | None:
    """``SymbolicShapeInference.infer_shapes`` without its side effect: when inference stops
    short (an op it does not know), that method saves ``sym_shape_infer_temp.onnx`` into the
    working directory before it raises; here an incomplete run gives None and writes nothing."""
    if not model.opset_import or max(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            default=0) < 7:
        return None
    run = inference(2**31 - 1, True, False, 0)  # int_max, auto_merge, guess_output_rank, verbose
    run._preprocess(model)
    done = False
    while run.run_:
        done = run._infer_impl()
    run._update_output_from_vi()
    return run.out_mp_ if done else None


def refine_shapes(graph: gs.Graph, model: onnx.ModelProto) -> None:
    """Fill dimensions of ``graph``'s variables that ONNX's inference (``model``, the weight-free
    skeleton it ran on) left open with what symbolic inference proves, in place."""
    names = input_symbols(graph)
    if not _open(graph, names):
        return
    found, types = _inferred(model)
    for name, tensor in graph.tensors().items():
        dims = found.get(name)
        if dims is None or not isinstance(tensor, gs.Variable) or not tensor.inputs:
            continue
        if tensor.dtype is None and types.get(name):  # an untyped shape is not exported
            tensor.dtype = onnx.helper.tensor_dtype_to_np_dtype(types[name])
        if tensor.shape is None:
            tensor.shape = [d if over_inputs(d, names) else None for d in dims]
            continue
        if len(tensor.shape) != len(dims):
            continue
        tensor.shape = [
            old if isinstance(old, int) or old in names else new if over_inputs(new, names)
            else old for old, new in zip(tensor.shape, dims, strict=True)]
