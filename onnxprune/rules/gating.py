"""Gate-weighted statistics for the mask oracle, as ONNX nodes: the mean over a norm's (or a
ReduceMean's) axes with closed channels counted as absent, and LayerNormalization built on
it. The rules that record "stats" gates (``Reduce``, ``LayerNormalization``) rebuild their
nodes with these; the gate values arrive as ``{p}_c``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def stats_constants(p: str, node: onnx.NodeProto, rank: int, elem: int,
                     opset: int) -> list[onnx.TensorProto]:
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
    if node.op_type == "ReduceMean":
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
        if axes is None and not (len(node.input) > 1 and node.input[1]):
            axes = list(range(rank))  # (with an axes input, the node's own is reused)
    elif node.op_type == "GlobalAveragePool":
        axes = list(range(2, rank))
    else:
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        axes = list(range(axis % rank, rank))
    out = [numpy_helper.from_array(np.array(1e-12, dtype), p + "_tiny")]
    if node.op_type == "LayerNormalization":
        out.append(numpy_helper.from_array(np.array(eps, dtype), p + "_eps"))
    if axes is not None:
        out.append(numpy_helper.from_array(np.array(axes, np.int64), p + "_axes"))
    return out


def _reduce_sum(x: str, y: str, node: onnx.NodeProto, p: str, name: str,
                opset: int) -> onnx.NodeProto:
    """ReduceSum over the stats node's axes (its own axes input when it has one), keepdims as
    the node (LayerNormalization keeps them)."""
    if node.op_type == "GlobalAveragePool":  # a mean, not a sum: their ratio is the same,
        # and it needs no axes (ReduceSum before opset 13 takes them as an attribute only)
        return helper.make_node("GlobalAveragePool", [x], [y], name=name)
    keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
    own = node.op_type == "ReduceMean" and len(node.input) > 1 and node.input[1]
    axes = node.input[1] if own else p + "_axes"
    if opset >= 13:
        return helper.make_node("ReduceSum", [x, axes], [y], name=name, keepdims=keep)
    attr_axes = next(a.ints for a in node.attribute if a.name == "axes") \
        if any(a.name == "axes" for a in node.attribute) else None
    kw = {"axes": list(attr_axes)} if attr_axes is not None else {}
    return helper.make_node("ReduceSum", [x], [y], name=name, keepdims=keep, **kw)


def weighted_mean(node: onnx.NodeProto, p: str, q: str, opset: int,
                   y: str | None = None) -> list[onnx.NodeProto]:
    """The mean over the stats node's axes with channels weighted by the gates ``p_c`` (so,
    the mean over kept ones), written to ``y`` (default: the node's output); the expanded
    weights are left in ``p_w`` and their sum in ``p_n``."""
    x, y = node.input[0], y or node.output[0]
    return [
        helper.make_node("Shape", [x], [p + "_xs"], name=q + "_xs"),
        helper.make_node("Expand", [p + "_c", p + "_xs"], [p + "_w"], name=q + "_w"),
        _reduce_sum(p + "_w", p + "_n0", node, p, q + "_n0", opset),
        helper.make_node("Max", [p + "_n0", p + "_tiny"], [p + "_n"], name=q + "_n"),
        helper.make_node("Mul", [x, p + "_w"], [p + "_wx"], name=q + "_wx"),
        _reduce_sum(p + "_wx", p + "_sx", node, p, q + "_sx", opset),
        helper.make_node("Div", [p + "_sx", p + "_n"], [y], name=q + "_mean"),
    ]


def weighted_layernorm(node: onnx.NodeProto, p: str, q: str,
                        opset: int) -> list[onnx.NodeProto]:
    """LayerNormalization with statistics weighted by the gates ``p_c`` (broadcast over the
    other normalized axes): closed channels count as absent, as in the pruned node."""
    x, y = node.input[0], node.output[0]
    scale = node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None

    def mk(op, ins, out, **kw):
        return helper.make_node(op, ins, [p + out], name=f"{q}_{out.lstrip('_')}", **kw)

    nodes = weighted_mean(node, p, q, opset, p + "_mean") + [
        mk("Sub", [x, p + "_mean"], "_d"),
        mk("Mul", [p + "_d", p + "_d"], "_d2"),
        mk("Mul", [p + "_d2", p + "_w"], "_wd2"),
        _reduce_sum(p + "_wd2", p + "_sv", node, p, q + "_sv", opset),
        mk("Div", [p + "_sv", p + "_n"], "_var"),
        mk("Add", [p + "_var", p + "_eps"], "_ve"),
        mk("Sqrt", [p + "_ve"], "_std"),
        mk("Div", [p + "_d", p + "_std"], "_z"),
    ]
    if bias is None:
        nodes.append(helper.make_node("Mul", [p + "_z", scale], [y], name=q + "_scale"))
    else:
        nodes.append(mk("Mul", [p + "_z", scale], "_zs"))
        nodes.append(helper.make_node("Add", [p + "_zs", bias], [y], name=q + "_bias"))
    return nodes
