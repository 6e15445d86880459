"""Fold inference-mode BatchNormalization into the Conv/ConvTranspose/Gemm before it (exact)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import const_value, detach, input_or_none
from ..rules import rule_of

FOLDABLE = ("Conv", "ConvTranspose", "Gemm")


def fold_batchnorms(graph: gs.Graph, scales: dict[str, np.ndarray] | None = None) -> int:
    """Fold every foldable BN; returns how many were folded. ``scales`` receives each folded
    BN's gamma, keyed by the tensor that carries its output (for the 'bn' criterion)."""
    folded = 0
    outputs = set(id(t) for t in graph.outputs)
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        x = bn.inputs[0]
        layer = x.inputs[0] if x.inputs else None
        if layer is None or layer.op not in FOLDABLE or layer.domain not in ("", None):
            continue
        if len(x.outputs) != 1 or id(x) in outputs:
            continue
        if any(o.outputs or id(o) in outputs for o in bn.outputs[1:]):
            continue
        stats = [const_value(t) for t in bn.inputs[1:5]]
        if any(s is None for s in stats) or not isinstance(layer.inputs[1], gs.Constant):
            continue
        scale, shift = _affine(*stats, float(bn.attrs.get("epsilon", 1e-5)))
        if not _fold_into(layer, scale, shift):
            continue
        if scales is not None:
            scales[bn.outputs[0].name] = np.asarray(stats[0], dtype=np.float64)
        layer.outputs = [bn.outputs[0]]
        detach(bn)
        folded += 1
    if folded:
        graph.cleanup()
    return folded


def _affine(gamma, beta, mean, var, eps):
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    return scale, beta.astype(np.float64) - mean.astype(np.float64) * scale


def _fold_into(layer: gs.Node, scale: np.ndarray, shift: np.ndarray) -> bool:
    dtype = np.asarray(layer.inputs[1].values).dtype
    w_new = rule_of(layer).scale_outputs(layer, scale)  # the rule knows the weight's layout
    if w_new is None:
        return False
    if layer.op == "Gemm":  # its bias is beta * C
        beta = float(layer.attrs.get("beta", 1.0))
        c = input_or_none(layer, 2)
        c_val = const_value(c) if c is not None else None
        if c is not None and c_val is None:
            return False
        if c_val is None or beta == 0.0:
            bias = shift
            layer.attrs["beta"] = 1.0
        else:  # beta * C' = beta * C * s + shift
            bias = c_val.astype(np.float64) * scale + shift / beta
        _set(layer, 1, w_new.astype(dtype))
        _set(layer, 2, bias.astype(dtype))
        return True
    b = input_or_none(layer, 2)
    b_val = np.zeros(scale.size) if b is None else const_value(b)
    if b_val is None:
        return False
    _set(layer, 1, w_new.astype(dtype))
    _set(layer, 2, (b_val.astype(np.float64) * scale + shift).astype(dtype))
    return True


def _set(node: gs.Node, index: int, values: np.ndarray) -> None:
    const = gs.Constant(f"{node.name}_folded_in{index}", np.ascontiguousarray(values))
    if index < len(node.inputs):
        node.inputs[index] = const
    else:
        while len(node.inputs) < index:
            node.inputs.append(gs.Variable.empty())
        node.inputs.append(const)
