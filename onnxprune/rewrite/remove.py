"""Remove channels: fix node attributes (rules), slice parameters, update tensor shapes."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis.model import ChannelAnalysis
from ..rules import Rewriter, RuleRegistry, default_registry


def remove_units(
    graph: gs.Graph,
    analysis: ChannelAnalysis,
    removed: np.ndarray,
    registry: RuleRegistry | None = None,
) -> int:
    """Remove every channel of the units flagged in ``removed`` (bool per unit), in place.

    ``analysis`` must have been computed on ``graph`` as it is now. Returns how many
    parameter elements were removed.
    """
    registry = registry or default_registry()
    removed = np.asarray(removed, dtype=bool)
    if removed.shape != (analysis.num_units,):
        raise ValueError(f"removed has shape {removed.shape}, expected ({analysis.num_units},)")
    if (removed & analysis.unit_frozen).any():
        raise ValueError("a frozen unit cannot be removed")
    if not np.array_equal(analysis.enforce_links(removed), removed):
        raise ValueError("a removed unit is still gathered by a kept one (see enforce_links)")

    def keep(tensor: gs.Tensor, axis: int) -> np.ndarray | None:
        mask = analysis.keep_mask((tensor.name, axis), removed)
        return None if mask is None or mask.all() else mask

    rw = Rewriter(graph, keep)
    for node in list(graph.nodes):
        registry.lookup(node.op, node.domain or "").rewrite(node, rw)

    tensors = graph.tensors()
    before = 0
    after = 0
    for (pname, axis), units in analysis.params.items():
        drop = (units >= 0) & removed[np.maximum(units, 0)]
        if not drop.any():
            continue
        const = tensors[pname]
        values = np.asarray(const.values)
        before += values.size
        const.values = np.ascontiguousarray(np.compress(~drop, values, axis=axis))
        after += const.values.size
        for user in const.outputs:  # a quantized weight: its de-quantized value follows
            if user.op == "DequantizeLinear" and user.inputs[0] is const:
                user.outputs[0].shape = list(const.values.shape)

    for (tname, axis), _units in analysis.slots.items():
        tensor = tensors.get(tname)
        mask = keep(tensor, axis) if tensor is not None else None
        if mask is None or not isinstance(tensor, gs.Variable) or tensor.shape is None:
            continue
        shape = list(tensor.shape)
        if axis < len(shape):
            shape[axis] = int(mask.sum())
            tensor.shape = shape
    for (tname, axis), units in analysis.folds.items():
        tensor = tensors.get(tname)
        if tensor is not None and tensor.shape is not None and removed[units].any():
            shape = list(tensor.shape)
            shape[axis] = None  # heads x batch: a symbolic product that shrank
            tensor.shape = shape
    graph.cleanup().toposort()
    return before - after
