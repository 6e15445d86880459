"""Quantized graphs. QDQ: QuantizeLinear/DequantizeLinear on activations pass channels through
like an elementwise op (a per-tensor scale is shared by every channel; per-channel scales and
zero points are sliced with the channels); a DequantizeLinear of a constant is a quantized
weight, whose slices the layer reading it claims (``Env.claim_weight``). QOperator kernels
(QLinearConv, MatMulInteger, ...) keep their scales inside the op: their channels freeze.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..ir.graph import prod, shape_of, static_dims, weight_shape
from ..ir.quant import QOPERATOR, dequantized_weight, per_channel_params
from .base import OpRule
from .env import Env

_NOT_LOWERED = ("distillation and compensation refit float weights; a quantized model is "
                "recovered in float and quantized after (--quantize int8)")


class QuantizeDequantize(OpRule):
    """y = saturate(x / scale + zp) or (x - zp) x scale, elementwise: tracked channels pass
    through; scales and zero points that run along a tracked axis are sliced with it."""

    ops = ("QuantizeLinear", "DequantizeLinear")
    no_lowering = {op: _NOT_LOWERED for op in ops}

    def propagate(self, node: gs.Node, env: Env) -> None:
        x = node.inputs[0]
        if node.op == "DequantizeLinear" and dequantized_weight(node.outputs[0]) is not None:
            return  # a quantized weight: the layer reading it claims its slices
        rank = env.rank(x)
        tracked = env.tracked(x)
        for axis, atoms in tracked.items():
            extra = None if rank is None else per_channel_params(node, axis, rank, len(atoms))
            if extra is None or any(not isinstance(t, gs.Constant) for t in extra):
                env.freeze(atoms, f"{node.op} {node.name}: scales that cannot be sliced")
                continue
            for t in extra:
                env.claim(node, t, 0, atoms)
            env.set(node.outputs[0], axis, atoms)


class QOperator(OpRule):
    """Integer kernels of onnxruntime's QOperator format: their channels stay."""

    ops = QOPERATOR
    no_macs = None
    no_lowering = {op: _NOT_LOWERED for op in ops}

    def propagate(self, node: gs.Node, env: Env) -> None:
        why = (f"{node.op} {node.name}: a QOperator kernel (its scales inside the op) has no "
               "channel rule; a QDQ model (QuantizeLinear/DequantizeLinear) is prunable")
        env.freeze_inputs(node, why)
        # its output channels are shown, frozen, so that the analysis says why
        y = node.outputs[0]
        rank = env.rank(y)
        axis = 1 if node.op in ("QLinearConv", "ConvInteger") else (rank or 0) - 1
        n = env.dim(y, axis) if rank else None
        if isinstance(n, int) and n > 0:
            atoms = env.fresh(n)
            env.freeze(atoms, why)
            env.set(y, axis, atoms)

    def macs(self, node: gs.Node) -> int:
        """As their float layers: conv (weight input 3 of QLinearConv, 1 of ConvInteger) and
        matrix products (output elements x the contracted length)."""
        y = static_dims(shape_of(node.outputs[0]))
        if y is None:
            return 0
        if node.op in ("QLinearConv", "ConvInteger"):
            index = 3 if node.op == "QLinearConv" else 1
            w = weight_shape(node.inputs[index]) if index < len(node.inputs) else None
            return 0 if w is None else prod(y) * w[1] * prod(w[2:])
        a = static_dims(shape_of(node.inputs[0]))
        return 0 if not a else prod(y) * a[-1]

