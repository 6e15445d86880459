"""Control flow whose path is known: an ``If`` with a constant condition becomes the branch it
takes, inlined into the graph around it, so the network inside (a voice-activity model keeps
its whole network in one) is analyzed and pruned like any other.

onnx-graphsurgeon's own flattening moves a branch output's producer onto the ``If``'s output,
which leaves dangling any node of the branch that also reads that tensor (and any output the
branch passes through); here the readers outside move to the branch's tensors instead, and
only a graph output gets an ``Identity`` to keep its name.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import adopt, const_value


def inline_constant_ifs(graph: gs.Graph) -> int:
    """Replace every ``If`` whose condition is a constant by the nodes of the branch it takes;
    returns how many were inlined (branches inlined may expose more, a fixpoint repeats)."""
    inlined = 0
    index = 0
    while index < len(graph.nodes):
        node = graph.nodes[index]
        cond = const_value(node.inputs[0]) if node.op == "If" and node.inputs else None
        if cond is None or np.asarray(cond).size != 1:
            index += 1
            continue
        branch: gs.Graph = node.attrs["then_branch" if bool(np.asarray(cond).ravel()[0])
                                      else "else_branch"]
        nodes = adopt(branch, node.name)
        outputs = {id(t) for t in graph.outputs}
        # (an If may declare fewer outputs than its branch computes: the rest are unused)
        for out, sub_out in zip(node.outputs, branch.outputs, strict=False):
            for consumer in list(out.outputs):  # outer readers read the branch's tensor
                for i, t in enumerate(consumer.inputs):
                    if t is out:
                        consumer.inputs[i] = sub_out
            if id(out) in outputs:  # a graph output keeps its name
                nodes.append(gs.Node("Identity", f"{node.name}/out_{out.name}",
                                     inputs=[sub_out], outputs=[out]))
        node.outputs.clear()
        graph.nodes[index:index + 1] = nodes
        index += len(nodes)
        inlined += 1
    if inlined:
        graph.cleanup().toposort()
    return inlined
