"""The rounding probe (``--round-to auto``): the layer doing the most work, timed at widths
around half its output features (read through the layer view: a Gemm with transB holds them
first, as torch's Linear exports)."""

import numpy as np

from onnxprune.ir.graph import import_model, infer_shapes
from onnxprune.select.latency import probe_round_to
from onnxprune.zoo.builder import GraphBuilder


def test_the_probe_varies_a_linear_layers_output_features():
    b = GraphBuilder(seed=0)
    x = b.input("x", [8, 512])
    w = np.random.default_rng(0).standard_normal((64, 512)).astype(np.float32)  # [out, in]
    y = b.op("Gemm", [x, b.const(w)], transB=1, name="linear")
    graph = infer_shapes(import_model(b.build([y])))
    probe = probe_round_to(graph, rounds=2)
    assert probe.layer == "linear"
    # centred on half its 64 outputs (its 512 inputs are not what a cut narrows)
    assert min(probe.widths) == 16 and max(probe.widths) == 64
    assert all(t > 0 for t in probe.latency_ms) and probe.choice in probe.cost
