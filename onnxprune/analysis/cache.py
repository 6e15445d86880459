"""Decoder key/value caches as an interface that may change (opt-in: ``--prune-kv-cache``).

Optimum's decoder exports take ``past_key_values.{i}.key|value`` inputs and give
``present.{i}.key|value`` outputs, laid out ``[batch, heads, sequence, head_dim]``. A graph
input or output normally keeps every channel; with the cache opened, each pair's head axis gets
channels of its own, joined to the heads that read the past and write the present, so pruning a
head drops it from both sides of the pair alike. The caller must then feed the pruned model a
cache of its new shapes: an interface change the run reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from ..rules.env import Env

PAST = re.compile(r"^(?:past_key_values|past)[._](\d+)[._](key|value)$")
PRESENT = ("present.{i}.{kind}", "present_key_values.{i}.{kind}", "present_{i}_{kind}")
HEAD_AXIS = 1


@dataclass(frozen=True)
class CachePair:
    past: str
    present: str
    axis: int


def cache_pairs(graph: gs.Graph) -> list[CachePair]:
    """The past/present pairs whose head axes match (rank 4, a static head count)."""
    outputs = {t.name: t for t in graph.outputs}
    pairs = []
    for t in graph.inputs:
        m = PAST.match(t.name)
        if m is None:
            continue
        out = next((outputs[n] for p in PRESENT
                    if (n := p.format(i=m[1], kind=m[2])) in outputs), None)
        if out is None or len(t.shape or []) != 4 or len(out.shape or []) != 4:
            continue
        heads = t.shape[HEAD_AXIS]
        if isinstance(heads, int) and heads > 1 and out.shape[HEAD_AXIS] == heads:
            pairs.append(CachePair(t.name, out.name, HEAD_AXIS))
    return pairs


def open_cache(env: Env, graph: gs.Graph, pairs: list[CachePair]) -> None:
    """Before propagation: the past inputs' head axes become channels."""
    tensors = graph.tensors()
    for p in pairs:
        past = tensors[p.past]
        env.set(past, p.axis, env.fresh(int(past.shape[p.axis])))


def join_cache(env: Env, graph: gs.Graph, pairs: list[CachePair]) -> None:
    """After propagation: each present output carries its past's heads, or both stay."""
    tensors = graph.tensors()
    for p in pairs:
        past, present = env.get(tensors[p.past], p.axis), env.get(tensors[p.present], p.axis)
        if present is None or len(present) != len(past):
            env.freeze(past, f"cache {p.past}: its heads do not reach {p.present} one to one")
            if present is not None:
                env.freeze(present, f"cache {p.present}: not the heads of {p.past}")
        else:
            env.union(past, present)
