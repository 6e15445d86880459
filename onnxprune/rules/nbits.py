"""onnxruntime's block-quantized MatMul (``com.microsoft.MatMulNBits``, what GenAI models and
``--quantize int4`` write): ``A[..., K] @ dequant(B)[K, N]``, B stored ``[N, K / block,
block x bits / 8]`` with a scale (and a packed zero point) per output channel and block.

An output channel is a row of B, scales and zero points (and a bias entry); input channels go
by whole blocks: each run of ``block_size`` channels is one unit (``union_blocks``, as heads
are), so the kept blocks' quantized bytes stay as they are and the pruned node computes
exactly what the gated original does. Packed zero points are unpacked, cut and packed again
here (``rewrite``); everything else is sliced by the claims."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import input_or_none, prod, shape_of, static_dims
from .base import OpRule, Rewriter, freeze_all
from .env import Env
from .linear import pass_rows


def _attrs(node: gs.Node) -> tuple[int, int, int, int]:
    a = node.attrs
    return int(a.get("K", 0)), int(a.get("N", 0)), int(a.get("bits", 4)), int(
        a.get("block_size", 0))


def _packed(zp: gs.Tensor | None) -> bool:
    """Zero points packed several to a byte (uint8), not one float per block."""
    return zp is not None and zp.values.dtype == np.uint8


class MatMulNBits(OpRule):
    ops = ("MatMulNBits",)
    domain = "com.microsoft"
    no_macs = None
    no_layer = ("its weight is quantized in blocks: refits write float weights (prune the "
                "float model, then --quantize int4)")
    no_lowering = {"MatMulNBits": "a block-quantized weight: distillation trains float "
                                  "weights (prune the float model, then --quantize int4)"}

    def macs(self, node: gs.Node) -> int:
        y = static_dims(shape_of(node.outputs[0]))
        return 0 if y is None else prod(y) * _attrs(node)[0]

    def propagate(self, node: gs.Node, env: Env) -> None:
        a, b, scales, y = node.inputs[0], node.inputs[1], node.inputs[2], node.outputs[0]
        zp, g_idx, bias = (input_or_none(node, i) for i in (3, 4, 5))
        k, n, bits, block = _attrs(node)
        consts = [b, scales] + [t for t in (zp, bias) if t is not None]
        rank = env.rank(a)
        if (not all(isinstance(t, gs.Constant) for t in consts) or g_idx is not None
                or bits not in (2, 4, 8) or block <= 0 or np.ndim(scales.values) != 2):
            freeze_all(node, env, "only constant blocks with 2-D scales and no g_idx are cut")
            return
        if rank is None:  # ONNX's inference stops at contrib ops; symbolic inference knows it
            freeze_all(node, env, "data rank unknown")
            return
        last = pass_rows(env, a, y, rank)
        ins = env.get(a, last)
        if ins is not None:
            if k % block:
                env.freeze(ins, f"MatMulNBits {node.name}: K={k} is not a whole number of "
                                f"blocks of {block}")
            else:
                blocks = env.atoms.union_blocks(ins, block)  # a block of channels: one unit
                for t in [b, scales] + ([zp] if zp is not None and not _packed(zp) else []):
                    env.claim(node, t, 1, blocks)
                env.gate(node, 0, last)
        out = env.fresh(n)
        for t in [b, scales] + [t for t in (zp, bias) if t is not None and not _packed(t)]:
            env.claim(node, t, 0, out)
        env.set(y, env.rank(y) - 1 if env.rank(y) else last, out)

    def rewrite(self, node: gs.Node, rw: Rewriter) -> None:
        a, y = node.inputs[0], node.outputs[0]
        k, n, bits, block = _attrs(node)
        keep_in = rw.keep(a, len(a.shape) - 1) if a.shape else None
        keep_out = rw.keep(y, len(y.shape) - 1) if y.shape else None
        if keep_in is None and keep_out is None:
            return
        if keep_out is not None:
            node.attrs["N"] = int(keep_out.sum())
        if keep_in is not None:
            node.attrs["K"] = int(keep_in.sum())
        zp = input_or_none(node, 3)
        if _packed(zp):
            kept_blocks = None if keep_in is None else keep_in.reshape(-1, block)[:, 0]
            rw.set_const_input(node, 3, repack(zp.values, n, -(-k // block), bits, keep_out,
                                               kept_blocks))


def repack(packed: np.ndarray, n: int, blocks: int, bits: int, rows: np.ndarray | None,
           kept: np.ndarray | None) -> np.ndarray:
    """Zero points packed ``8 // bits`` to a byte, low bits first, a row per output channel
    (``[n, bytes]`` or flat): the ``rows`` and ``kept`` blocks of each row, packed again."""
    per = 8 // bits
    flat = packed.ndim == 1
    data = packed.reshape(n, -1)
    shifts = (np.arange(per) * bits).astype(np.uint8)
    values = ((data[..., None] >> shifts) & ((1 << bits) - 1)).reshape(n, -1)[:, :blocks]
    if rows is not None:
        values = values[rows]
    if kept is not None:
        values = values[:, kept]
    width = -(-values.shape[1] // per) * per
    padded = np.zeros((values.shape[0], width), np.uint8)
    padded[:, :values.shape[1]] = values
    out = (padded.reshape(values.shape[0], -1, per) << shifts).sum(-1).astype(np.uint8)
    return out.ravel() if flat else out
