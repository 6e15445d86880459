"""onnxruntime's block-quantized MatMul (com.microsoft.MatMulNBits, as its quantizer and GenAI
models write it) prunes directly: output channels with their rows of blocks, scales and zero
points, input channels by whole blocks (a block is one unit), proven against the oracle on
the quantized graph itself; the kept blocks' bytes are the original's."""

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.api import analyze, prune
from onnxprune.rules.nbits import repack
from onnxprune.testing import check_oracle

C, H = 64, 128


def ffn(hidden: int = H, block: int = 32, symmetric: bool = False) -> onnx.ModelProto:
    """x -> MatMul (C) -> MatMul (hidden) -> Relu -> MatMul (C) + residual, every MatMul in
    MatMulNBits blocks by onnxruntime's quantizer."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    rng = np.random.default_rng(0)
    weights = {"w0": rng.standard_normal((8, C)), "w1": rng.standard_normal((C, hidden)) * 0.1,
               "w2": rng.standard_normal((hidden, C)) * 0.1}
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["s"]),
             helper.make_node("MatMul", ["s", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["o"]),
             helper.make_node("Add", ["o", "s"], ["y"])]
    g = helper.make_graph(nodes, "ffn", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 4, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["N", 4, C])],
        [numpy_helper.from_array(w.astype(np.float32), k) for k, w in weights.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    logging.disable(logging.INFO)
    try:
        q = MatMulNBitsQuantizer(model, block_size=block, is_symmetric=symmetric)
        q.process()
    finally:
        logging.disable(logging.NOTSET)
    return q.model.model


def initializer(model, suffix):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
            if i.name.endswith(suffix)}


@pytest.mark.parametrize("symmetric", [False, True])
def test_blocks_and_output_channels_prune_as_the_oracle_says(symmetric):
    model = ffn(symmetric=symmetric)
    hidden = [g for g in analyze(model).channels.groups if not g.frozen]
    assert [g.channels for g in hidden] == [H // 32]  # the FFN's 128 channels: 4 blocks
    check_oracle(model, trials=4)
    r = prune(model, ratio=0.5)
    assert r.verification.passed and r.params_after < 0.6 * r.params_before
    attrs = [{a.name: a.i for a in n.attribute if a.name in ("K", "N")}
             for n in r.model.graph.node if n.op_type == "MatMulNBits"]
    assert attrs == [{"K": 8, "N": C}, {"K": C, "N": H // 2}, {"K": H // 2, "N": C}]
    # the up projection's kept rows are rows of the original's quantized bytes, unchanged
    before, after = initializer(model, "w1_Q4"), initializer(r.model, "w1_Q4")
    rows = {row.tobytes() for row in next(iter(before.values()))}
    kept = next(iter(after.values()))
    assert kept.shape[0] == H // 2 and all(row.tobytes() in rows for row in kept)


def test_a_k_of_part_blocks_freezes_with_the_reason():
    model = ffn(hidden=40, block=32)  # the down projection's K=40: one block and a part
    group = next(g for g in analyze(model).channels.groups if g.channels == 40)
    assert group.frozen and "not a whole number of blocks of 32" in group.reason


def test_zero_points_are_unpacked_cut_and_packed_again():
    values = np.arange(2 * 5, dtype=np.uint8).reshape(2, 5) % 16  # 2 rows of 5 blocks
    padded = np.concatenate([values, np.zeros((2, 1), np.uint8)], axis=1)
    packed = (padded[:, 0::2] | (padded[:, 1::2] << 4)).astype(np.uint8)  # low nibble first
    kept = np.array([True, False, True, True, False])
    out = repack(packed, 2, 5, 4, np.array([False, True]), kept)
    want = values[1:][:, kept]
    want = np.concatenate([want, np.zeros((1, 1), np.uint8)], axis=1)
    assert out.tolist() == (want[:, 0::2] | (want[:, 1::2] << 4)).tolist()
