"""How much a residual block changes its stream: Block Influence (ShortGPT), one minus the
cosine between the stream before and after the block, over every position of the data."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from ..analysis.blocks import Block
from ..ir.weights import Skeleton
from ..search.activations import fetched


def channel_axis(block: Block, slots: Mapping[tuple[str, int], np.ndarray], rank: int) -> int:
    """The stream's channel axis: where the channel analysis found its channels, else the
    last axis of a sequence ([batch, tokens, width]) and axis 1 of anything else."""
    found = [axis for (name, axis) in slots if name == block.stream]
    if found:
        return found[0]
    return rank - 1 if rank == 3 else min(1, rank - 1)


def influence(s: np.ndarray, y: np.ndarray, axis: int) -> float:
    """1 - the mean cosine, along ``axis``, of ``s`` and ``y`` at every other position."""
    a = np.moveaxis(np.asarray(s, np.float64), axis, -1).reshape(-1, s.shape[axis])
    b = np.moveaxis(np.asarray(y, np.float64), axis, -1).reshape(-1, y.shape[axis])
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.einsum("ij,ij->i", a, b) / np.maximum(norms, 1e-30)
    cos[norms == 0] = 1.0  # a zero stream that stays zero: unchanged
    return float(1.0 - cos.mean())


def block_influence(model: onnx.ModelProto | Skeleton, blocks: list[Block], outputs: Mapping[
        str, str], feeds: dict, slots: Mapping[tuple[str, int], np.ndarray]) -> np.ndarray:
    """Block Influence of every block on ``feeds``: the stream it reads against the Add's
    output (``outputs``: block name -> that tensor), fetched a few tensors at a time."""
    names: list[str] = []
    for b in blocks:
        names += [b.stream, outputs[b.name]]
    names = list(dict.fromkeys(names))
    need = {n: sum(n in (b.stream, outputs[b.name]) for b in blocks) for n in names}
    held: dict[str, np.ndarray] = {}
    scores = np.full(len(blocks), np.nan)
    for name, value in fetched(model, names, feeds):
        held[name] = value
        for i, b in enumerate(blocks):
            y = outputs[b.name]
            if np.isnan(scores[i]) and b.stream in held and y in held:
                s = held[b.stream]
                scores[i] = influence(s, held[y], channel_axis(b, slots, s.ndim))
                for n in (b.stream, y):
                    need[n] -= 1
                    if need[n] == 0:
                        del held[n]
    return scores
