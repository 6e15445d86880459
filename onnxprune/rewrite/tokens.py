"""Keep only some tokens of an input vocabulary: the embedding table loses the other rows, and
the model still reads the same token ids.

A sentence encoder's word embeddings are often half its parameters, and an application in one
language, or one domain, never reads most of them. ``keep_tokens`` slices the table of every
``Gather`` that looks the ids of one input up (axis 0 of a constant table) to the kept rows and
puts a ``Gather`` of a remapping table (int32, one entry per id) in front of them: a kept id
reads its own row, a removed one the row of its fallback, a kept token: the nearest kept
embedding by cosine (default: a rare word reads a close one instead of its exact vector), or a
given token such as ``[UNK]``. The input, the tokenizer and everything else that reads the ids
(masks, positions) stay as they were.

What the trimmed model computes is exactly the original on the ids with each removed one
replaced by its fallback (``fallback_ids``): that is the oracle the pass verifies against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

from ..analysis.size import graph_params
from ..ir.graph import const_value, unique_name
from .classes import parse_classes

NEAREST = "nearest"
# rows compared at once when finding each removed token's nearest kept one
CHUNK = 2048


class TokenError(ValueError):
    """The vocabulary cannot be trimmed (the message says why)."""


@dataclass(frozen=True)
class TokenTrim:
    input: str  # the graph input holding the ids
    vocabulary: int  # rows of the table(s) before
    indices: tuple[int, ...]  # the kept ids
    tables: tuple[str, ...]  # the trimmed tables (their original names)
    fallback: str  # "nearest" or the id every removed one reads
    remap: np.ndarray  # id -> the original id whose row it reads now (itself when kept)
    params_removed: int
    remap_entries: int  # the int32 remapping table the model gained

    @property
    def kept(self) -> int:
        return len(self.indices)


def _lookups(graph: gs.Graph, ids: gs.Tensor) -> list[tuple[gs.Node, gs.Tensor]]:
    """The embedding Gathers reading ``ids`` (directly or through Cast/Identity) with the
    tensor that reaches their indices."""
    out, todo, seen = [], [ids], set()
    while todo:
        t = todo.pop()
        if t.name in seen:
            continue
        seen.add(t.name)
        for node in t.outputs:
            if node.op in ("Cast", "Identity") and node.inputs[0] is t:
                if node.op == "Cast" and not _to_integer(node):
                    continue
                todo.append(node.outputs[0])
            elif (node.op == "Gather" and len(node.inputs) > 1 and node.inputs[1] is t
                  and const_value(node.inputs[0]) is not None
                  and node.attrs.get("axis", 0) == 0):
                out.append((node, t))
    return out


def _to_integer(cast: gs.Node) -> bool:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(int(cast.attrs["to"]))).kind in "iu"
    except (KeyError, TypeError, ValueError):
        return False


def token_inputs(graph: gs.Graph) -> list[dict]:
    """The integer inputs that index an embedding table: name, rows, parameters of the
    tables (nothing changed), the largest first."""
    out = []
    for t in graph.inputs:
        if t.dtype is None or np.dtype(t.dtype).kind not in "iu":
            continue
        found = _lookups(graph, t)
        tables = {n.inputs[0].name: const_value(n.inputs[0]) for n, _ in found}
        if not tables:
            continue
        rows = {int(v.shape[0]) for v in tables.values() if v.ndim >= 1}
        if len(rows) != 1:  # keep_tokens says why
            continue
        out.append({"input": t.name, "vocabulary": rows.pop(), "tables": sorted(tables),
                    "params": sum(int(v.size) for v in tables.values())})
    return sorted(out, key=lambda d: -d["params"])


def _input(graph: gs.Graph, name: str | None) -> gs.Tensor:
    inputs = {t.name: t for t in graph.inputs}
    if name is not None:
        if name not in inputs:
            raise TokenError(f"no input {name!r} (inputs: {', '.join(inputs)})")
        return inputs[name]
    found = token_inputs(graph)
    if not found:
        raise TokenError("no integer input of the model indexes embedding tables of one size "
                         "(Gathers on axis 0 of constants)")
    same = [d["input"] for d in found if d["vocabulary"] == found[0]["vocabulary"]]
    if len(same) > 1:
        raise TokenError(f"inputs {' and '.join(same)} each index {found[0]['vocabulary']}-row "
                         "tables: name the one whose tokens go")
    return inputs[found[0]["input"]]


def _nearest(table: np.ndarray, kept: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """For each removed row, the position in ``kept`` of the most similar kept row (cosine;
    a zero row is nearest to the first kept one)."""
    rows = table.reshape(table.shape[0], -1).astype(np.float32)
    norm = np.linalg.norm(rows, axis=1, keepdims=True)
    unit = rows / np.where(norm > 0, norm, 1.0)
    ref = unit[kept]
    out = np.empty(removed.size, np.int64)
    for s in range(0, removed.size, CHUNK):
        part = removed[s:s + CHUNK]
        out[s:s + CHUNK] = np.argmax(unit[part] @ ref.T, axis=1)
    return out


def keep_tokens(graph: gs.Graph, kept, input: str | None = None,
                fallback: str | int = NEAREST) -> TokenTrim:
    """Trim ``graph`` in place so the embedding tables read by ``input`` (default: the integer
    input with the largest table) hold only the ``kept`` ids; removed ids read ``fallback``'s
    row ("nearest": the nearest kept one, by the first table; or a kept id)."""
    ids = _input(graph, input)
    found = _lookups(graph, ids)
    if not found:
        raise TokenError(f"input {ids.name} does not index an embedding table (a Gather on axis "
                         "0 of a constant)")
    tables = list({n.inputs[0].name: n.inputs[0] for n, _ in found}.values())
    rows = {int(const_value(t).shape[0]) for t in tables if const_value(t).ndim >= 1}
    if len(rows) != 1:
        raise TokenError(f"the tables {input} indexes differ in rows: {sorted(rows)}")
    vocab = rows.pop()
    lookups = {id(n) for n, _ in found}
    for t in tables:
        others = [n for n in t.outputs if id(n) not in lookups]
        if any(o is t for o in graph.outputs):
            raise TokenError(f"embedding table {t.name} is an output of the model: its rows "
                             "cannot go")
        if others:
            other = others[0]
            why = ("looks it up too (from another input, or on another axis)"
                   if other.op == "Gather" else "reads it too (tied to an output layer?)")
            raise TokenError(f"embedding table {t.name}: {other.op} node {other.name} {why}; "
                             "its rows cannot go")
    keep = np.asarray(parse_classes(kept, "token"), dtype=np.int64)
    if keep[-1] >= vocab:
        raise TokenError(f"token {int(keep[-1])} does not exist: {ids.name} indexes {vocab} rows")
    if keep.size == vocab:
        raise TokenError(f"every one of the {vocab} tokens of {ids.name} is kept: nothing to cut")
    position = np.full(vocab, -1, np.int64)
    position[keep] = np.arange(keep.size)
    removed = np.flatnonzero(position < 0)
    if fallback == NEAREST:
        widest = max((const_value(t) for t in tables), key=lambda v: v.size)
        if widest.size // vocab < 2:
            raise TokenError(f"the tables {ids.name} indexes hold one value per token: no "
                             "embedding to find a nearest token by; give a fallback token id")
        position[removed] = _nearest(widest, keep, removed)
        how = NEAREST
    else:
        try:
            fid = int(fallback)
        except (TypeError, ValueError):
            raise TokenError(f"fallback {fallback!r}: 'nearest' or a token id") from None
        if not 0 <= fid < vocab or position[fid] < 0:
            raise TokenError(f"fallback token {fid} is not among the kept tokens")
        position[removed] = position[fid]
        how = str(fid)
    # every check before the first change: a refused trim leaves the graph as it was
    before = graph_params(graph)
    _through(graph, found, position, "token_rows")
    for table in tables:
        new = gs.Constant(unique_name(graph, f"{table.name}_kept"),
                          np.ascontiguousarray(const_value(table)[keep]))
        for node in list(table.outputs):
            node.inputs[node.inputs.index(table)] = new
    graph.cleanup().toposort()
    return TokenTrim(ids.name, vocab, tuple(int(k) for k in keep),
                     tuple(t.name for t in tables), how, keep[position],
                     before - graph_params(graph), vocab)


def fallback_ids(graph: gs.Graph, trim: TokenTrim) -> None:
    """The oracle of a trim, on the graph before it (in place): each embedding Gather of
    ``trim.input`` reads its ids through ``trim.remap`` (removed ids -> the id whose row they
    read now), the tables whole."""
    ids = {t.name: t for t in graph.inputs}[trim.input]
    _through(graph, _lookups(graph, ids), trim.remap, "fallback_ids")
    graph.toposort()


def _through(graph: gs.Graph, found: list[tuple[gs.Node, gs.Tensor]], table: np.ndarray,
             hint: str) -> None:
    """Each lookup in ``found`` reads its ids through a Gather of ``table`` (int32), one per
    ids tensor."""
    remap = gs.Constant(unique_name(graph, hint), table.astype(np.int32))
    made: dict[str, gs.Variable] = {}
    for node, t in found:
        if t.name not in made:
            made[t.name] = gs.Variable(unique_name(graph, f"{t.name}_{hint}"), dtype=np.int32,
                                       shape=t.shape)
            graph.nodes.append(gs.Node("Gather", unique_name(graph, f"{t.name}_{hint}"),
                                       attrs={"axis": 0}, inputs=[remap, t],
                                       outputs=[made[t.name]]))
        node.inputs[1] = made[t.name]
