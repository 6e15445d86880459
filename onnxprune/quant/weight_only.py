"""Weight-only int4 quantization with onnxruntime's own quantizer (``MatMulNBitsQuantizer``):
every MatMul with a constant 2-D weight becomes a ``MatMulNBits`` (com.microsoft) whose weight
is stored in 4-bit blocks along its input axis, each block with its scale (and a zero point
unless symmetric), rounded to nearest; activations stay float. What onnxruntime GenAI's
language models carry. No calibration data is needed to quantize (the check after it uses
them)."""

from __future__ import annotations

import onnx

from ..errors import UsageError
from .static import _quiet

BLOCK_SIZES = (16, 32, 64, 128, 256)


def matmul_weights(model: onnx.ModelProto) -> int:
    """How many MatMul nodes read a constant 2-D weight (what int4 quantizes)."""
    consts = {t.name for t in model.graph.initializer if len(t.dims) == 2}
    return sum(n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in consts
               for n in model.graph.node)


def quantize_int4(model: onnx.ModelProto, block_size: int = 32, symmetric: bool = True
                  ) -> onnx.ModelProto:
    """``model`` with its MatMul weights in int4 blocks of ``block_size`` (a new model)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    if block_size not in BLOCK_SIZES:
        raise UsageError(f"int4 block size must be one of {', '.join(map(str, BLOCK_SIZES))}, "
                         f"not {block_size}")
    if not matmul_weights(model):
        raise UsageError("--quantize int4 quantizes MatMul layers with a constant weight, and "
                         "this model has none (--quantize int8 quantizes convolutions)")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    with _quiet():
        q = MatMulNBitsQuantizer(copy, bits=4, block_size=block_size, is_symmetric=symmetric)
        q.process()
    return q.model.model
