"""A residual block's own time beyond its weighted layers: its branch cut out of the graph as a
standalone model (the tensors it reads from outside become inputs, fed their values from one
run of the whole model), timed whole, less its weighted layers' table time. What attention's activation products, softmax and
norms cost goes with the block when a cut removes it (the latency table times only weighted
layers; the rest of the model is otherwise a constant)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..analysis.blocks import Block
from ..errors import OnnxPruneError, UnsupportedModelError
from ..ir.graph import export_skeleton
from ..ir.runtime import computing, session
from ..ir.weights import proto


def _outer(graph: gs.Graph, block: Block) -> tuple[list[str], list[str]] | None:
    """(the tensors the branch of ``block`` reads from outside, the tensors it joins with)."""
    inner = [n for n in graph.nodes if n.name in set(block.nodes)]
    made = {t.name for n in inner for t in n.outputs}
    outer = list(dict.fromkeys(t.name for n in inner for t in n.inputs
                               if isinstance(t, gs.Variable) and t.name and t.name not in made))
    nodes = {n.name: n for n in graph.nodes}
    outs = [nodes[add].inputs[i].name for add, i in block.joins if add in nodes]
    if not inner or not outs or any(o not in made for o in outs):
        return None
    return outer, outs


def branch_model(graph: gs.Graph, block: Block, values: dict[str, np.ndarray]
                 ) -> tuple[onnx.ModelProto, dict] | None:
    """The branch of ``block`` as a standalone model whose inputs are the tensors it reads
    from outside, and its feeds: their ``values`` in a run of the whole model (their real
    sizes, masks and indices); None where it cannot stand alone."""
    ends = _outer(graph, block)
    if ends is None or any(n not in values for n in ends[0]):
        return None
    outer, outs = ends
    sub = graph.copy()
    tensors = sub.tensors()
    for name in outer:
        t, v = tensors[name], values[name]
        t.inputs.clear()  # an input of the branch now
        t.shape, t.dtype = list(v.shape), v.dtype
    sub.inputs = [tensors[n] for n in outer]
    sub.outputs = [tensors[n] for n in outs]
    sub.cleanup()
    if {n.name for n in sub.nodes} - set(block.nodes):
        return None  # it reads something the outside computes from its own outputs
    return gs.export_onnx(sub), {n: values[n] for n in outer}


def own_times(graph: gs.Graph, blocks: Sequence[tuple[int, Block]], feeds: dict, timer,
              layers_ms: dict[int, float], seconds: float = 0.04) -> dict[int, float]:
    """Each block's time beyond ``layers_ms`` (its weighted layers' table time), by unit, its
    branch fed what a run of ``graph`` on ``feeds`` gives it; the blocks that cannot be timed
    alone are left out."""
    names = list(dict.fromkeys(n for _, b in blocks for n in (_outer(graph, b) or ([], []))[0]))
    model = export_skeleton(graph)
    known = {i.name for i in proto(model).graph.input} | {
        o for node in proto(model).graph.node for o in node.output}
    names = [n for n in names if n in known]
    try:
        run = computing(model, names)
        given = {k: v for k, v in feeds.items() if k in {i.name for i in proto(run).graph.input}}
        values = dict(zip(names, session(run).run(names, given), strict=True))
    except Exception as err:  # noqa: BLE001 - no standalone branches: no extra time
        if isinstance(err, OnnxPruneError):
            raise
        return {}
    cut = [(unit, branch_model(graph, b, values)) for unit, b in blocks]
    cut = [(unit, m) for unit, m in cut if m is not None]
    if not cut:
        return {}
    try:
        ms = timer.time([m for _, (m, _) in cut], [f for _, (_, f) in cut], seconds, 50,
                        [range(i, min(i + 8, len(cut))) for i in range(0, len(cut), 8)])
    except Exception as err:  # noqa: BLE001 - a branch onnxruntime will not run alone
        if isinstance(err, OnnxPruneError) and not isinstance(err, UnsupportedModelError):
            raise  # the device went away, refused the login, ...: said as such
        return {}
    return {unit: max(0.0, t["ms"] - layers_ms.get(unit, 0.0))
            for (unit, _), t in zip(cut, ms, strict=True)}
