"""What one benchmark run feeds a model: input shapes at a batch, random inputs, MACs.

Input shapes: a symbolic (or unknown) first dimension takes the batch; every other dynamic
dimension must be given in ``input_shapes`` (NAME -> full shape; its first dimension is
replaced by the batch when the model's is symbolic). A model whose inputs all have a static
first dimension runs only at that batch.

MACs: ``onnxprune.analysis.size`` counts per sample (symbolic dims as 1). Here the inputs are fixed
to the shapes actually fed and shapes are inferred again, so ``macs`` is the work of one run
of the whole batch: ``batch x`` the per-sample count for a model with a batch dimension.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..analysis.size import graph_macs, param_bytes, params_by_type
from ..errors import UsageError
from ..ir.graph import import_model, infer_shapes
from ..ir.io import load_model

Shapes = Mapping[str, Sequence[int]]


@dataclass(frozen=True)
class ModelInput:
    name: str
    dims: tuple[int | None, ...]  # None: symbolic or unknown
    dtype: np.dtype


@dataclass(frozen=True)
class BenchModel:
    """A model to measure: a display name, what onnxruntime loads, its inputs and size."""

    name: str
    source: str | bytes  # a file path (keeps external data working) or serialized bytes
    proto: onnx.ModelProto
    inputs: tuple[ModelInput, ...]
    params: int
    params_by_type: dict[str, int] | None = None  # parameters per element type (int8, ...)
    weight_bytes: int | None = None  # bytes the parameters take (4-bit types packed)

    @property
    def fixed_batch(self) -> int | None:
        """The batch the model is fixed to, or None when an input has a symbolic batch dim."""
        if not self.inputs or any(not i.dims or i.dims[0] is None for i in self.inputs):
            return None
        return self.inputs[0].dims[0]

    def shapes(self, batch: int, given: Shapes | None = None) -> dict[str, list[int]] | None:
        """Concrete input shapes at ``batch``; None when the model cannot run at that batch."""
        fixed = self.fixed_batch
        if fixed is not None and fixed != batch:
            return None
        return {i.name: _concrete(self.name, i, batch, (given or {}).get(i.name))
                for i in self.inputs}

    def feeds(self, shapes: Mapping[str, Sequence[int]], seed: int = 0) -> dict[str, np.ndarray]:
        """Random inputs of the given shapes (floats ~ N(0, 1), integers and bools in {0, 1})."""
        rng = np.random.default_rng(seed)
        out = {}
        for i in self.inputs:
            dims = list(shapes[i.name])
            if np.issubdtype(i.dtype, np.floating):
                out[i.name] = rng.standard_normal(dims).astype(i.dtype)
            else:
                out[i.name] = rng.integers(0, 2, dims).astype(i.dtype)
        return out

    def macs(self, shapes: Mapping[str, Sequence[int]]) -> int:
        """MACs of one run with inputs of these shapes (the whole batch)."""
        graph = import_model(self.proto)
        names = {t.name for t in graph.inputs}
        for tensor in graph.tensors().values():
            if not isinstance(tensor, gs.Variable):
                continue
            if tensor.name in shapes:
                tensor.shape = list(shapes[tensor.name])
            elif tensor.name not in names:
                tensor.shape = None  # inferred again from the concrete inputs
        return graph_macs(infer_shapes(graph))


def _concrete(model: str, inp: ModelInput, batch: int, given: Sequence[int] | None) -> list[int]:
    if given is not None:
        if len(given) != len(inp.dims):
            raise UsageError(f"input shape for {inp.name} has {len(given)} dims; model {model} "
                             f"expects {len(inp.dims)}")
        dims: list[int | None] = [int(d) for d in given]
        if inp.dims and inp.dims[0] is None:
            dims[0] = batch
        for i, (want, have) in enumerate(zip(inp.dims, dims, strict=True)):
            if want is not None and want != have:
                raise UsageError(f"input shape for {inp.name}: dimension {i} of model {model} "
                                 f"is fixed to {want}, got {have}")
        return [int(d) for d in dims]
    dims = list(inp.dims)
    if dims and dims[0] is None:
        dims[0] = batch
    for i, d in enumerate(dims):
        if d is None:
            raise UsageError(f"input {inp.name} of {model} has a dynamic dimension {i}; give its "
                             f"shape with --input-shape {inp.name}=DxD...")
    return [int(d) for d in dims]


def _inputs(model: onnx.ModelProto) -> tuple[ModelInput, ...]:
    inits = {i.name for i in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                     for d in tt.shape.dim)
        elem = tt.elem_type or onnx.TensorProto.FLOAT
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
        out.append(ModelInput(vi.name, dims, dtype))
    return tuple(out)


def load_models(models: Sequence[str | Path | onnx.ModelProto],
                names: Sequence[str | None] | None = None) -> list[BenchModel]:
    """Load every model (clear errors for missing or invalid files); names (a file's name, a
    model's graph name, unless ``names`` gives one) are unique."""
    out: list[BenchModel] = []
    taken: set[str] = set()
    for index, item in enumerate(models):
        if isinstance(item, onnx.ModelProto):
            proto, source = item, item.SerializeToString()
            name = item.graph.name or f"model{index}"
        else:
            proto, source, name = load_model(item), str(item), Path(item).name
        if names is not None and index < len(names) and names[index]:
            name = names[index]
        unique, n = name, 2
        while unique in taken:
            unique, n = f"{name}#{n}", n + 1
        taken.add(unique)
        by_type = params_by_type(import_model(proto))
        out.append(BenchModel(unique, source, proto, _inputs(proto), sum(by_type.values()),
                              by_type, param_bytes(by_type)))
    return out


def check_shape_names(models: Sequence[BenchModel], given: Shapes | None) -> None:
    """Every name in ``given`` must be an input of at least one model."""
    known = {i.name for m in models for i in m.inputs}
    unknown = sorted(set(given or {}) - known)
    if unknown:
        raise UsageError(f"--input-shape names no model input: {', '.join(unknown)} "
                         f"(inputs: {', '.join(sorted(known))})")


def at_batch(models: list[BenchModel], batch: int, input_shapes, pinned,
             note: Callable[[str], None]) -> list[tuple[BenchModel, dict, dict]]:
    """(model, shapes, feeds) of each model that runs at ``batch``; the others are skipped
    with a note (their inputs fix another batch)."""
    out = []
    for model in models:
        shapes = model.shapes(batch, input_shapes)
        if shapes is None:
            note(f"skipping {model.name} at batch {batch}: its inputs fix the batch to "
                 f"{model.fixed_batch}")
            continue
        out.append((model, shapes, {**model.feeds(shapes), **pinned}))
    return out
