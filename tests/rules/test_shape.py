"""Shape: a channel count read as data freezes those channels, unless nobody reads it or the
sizes only become the targets of reshapes (they follow the cut). Graphs built in code."""

import numpy as np
from conftest import group_with_layer

from onnxprune.testing import check_oracle
from onnxprune.zoo.builder import GraphBuilder


def _net(read: str):
    """x [N, 6] -> fc1 (16 channels) -> h; Shape(h) read three ways."""
    b = GraphBuilder(seed=0, opset=17)
    h = b.relu(b.gemm(b.input("x", ["N", 6]), 6, 16, name="fc1"))
    dims = b.op("Shape", [h], name="shape")
    if read == "data":  # the channel count becomes a value: h / 16
        count = b.op("Cast", [b.op("Gather", [dims, b.const(np.array(1, np.int64))])], to=1)
        h = b.op("Div", [h, count])
    elif read == "batch":  # only the batch size is read
        batch = b.op("Gather", [dims, b.const(np.array([0], np.int64))])
        h = b.op("Reshape", [h, b.op("Concat", [batch, b.const(np.array([-1], np.int64))],
                                     axis=0)])
    else:  # the sizes are a reshape target: [N, 16] -> [N, 16] through Shape
        h = b.op("Reshape", [h, dims])
    return b.build([b.gemm(h, 16, 3, name="fc2")])


def test_a_static_channel_count_read_as_data_is_the_originals_constant():
    """h / size(h, 1): the count is static, so normalization folds it to 16; the pruned model
    divides by the original's 16 and the oracle agrees (the channels stay prunable)."""
    res = check_oracle(_net("data"), trials=4)
    g = group_with_layer(res.analysis, "fc1")
    assert not g.frozen and "fc2" in g.layers


def test_a_channel_count_read_as_data_freezes_with_the_reason():
    """The Shape rule itself (what normalization cannot fold): a count a consumer reads as a
    value freezes those channels."""
    import onnx_graphsurgeon as gs

    from onnxprune.rules.env import Env
    from onnxprune.rules.shape import Shape

    graph = gs.import_onnx(_net("data"))
    shape = next(n for n in graph.nodes if n.op == "Shape")
    env = Env(graph)
    atoms = env.fresh(16)
    env.set(shape.inputs[0], 1, atoms)
    Shape().propagate(shape, env)
    labels, frozen, reasons = env.atoms.solve()
    assert frozen[labels[atoms]].all()
    assert reasons[labels[atoms[0]]] == "Shape shape: reads the size of channel axis 1"


def test_reading_only_the_batch_leaves_the_channels():
    res = check_oracle(_net("batch"), trials=4)
    assert not group_with_layer(res.analysis, "fc1").frozen


def test_sizes_that_only_become_a_reshape_target_follow_the_cut():
    res = check_oracle(_net("target"), trials=4)
    g = group_with_layer(res.analysis, "fc1")
    assert not g.frozen and "fc2" in g.layers
