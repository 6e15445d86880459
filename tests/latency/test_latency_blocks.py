"""A block's own time beyond its weighted layers (latency/blocks.py): its branch cut out as a
standalone model, fed what a run of the whole model gives it, computes what the branch
computes there; the latency model takes that time away with the block."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "analysis"))
from test_analysis_blocks import C, T, transformer  # noqa: E402

from onnxprune.analysis.blocks import find_blocks, with_blocks  # noqa: E402
from onnxprune.analysis.channels import analyze_channels  # noqa: E402
from onnxprune.analysis.size import shaped  # noqa: E402
from onnxprune.ir.graph import export_skeleton, import_model  # noqa: E402
from onnxprune.ir.runtime import computing, session  # noqa: E402
from onnxprune.latency.blocks import branch_model  # noqa: E402
from onnxprune.latency.model import LatencyModel  # noqa: E402
from onnxprune.latency.table import LatencyTable  # noqa: E402
from onnxprune.testing import normalized  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    graph = import_model(normalized(transformer("pre")))
    at = shaped(graph, {"x": [2, T, C]})
    blocks = [b for b in find_blocks(graph) if b.removable]
    feeds = {"x": np.random.default_rng(0).standard_normal((2, T, C)).astype(np.float32)}
    return graph, at, blocks, feeds


def test_a_branch_alone_computes_what_it_computes_in_the_model(setup):
    graph, at, blocks, feeds = setup
    model = export_skeleton(at)
    for block in blocks:
        nodes = {n.name: n for n in at.nodes}
        joined = [nodes[add].inputs[i].name for add, i in block.joins]
        reads = sorted({t.name for n in at.nodes if n.name in block.nodes for t in n.inputs
                        if not hasattr(t, "values") and t.name} - {
            o.name for n in at.nodes if n.name in block.nodes for o in n.outputs})
        names = reads + joined
        values = dict(zip(names, session(computing(model, names)).run(names, feeds),
                          strict=True))
        cut = branch_model(at, block, values)
        assert cut is not None, block.name
        branch, inputs = cut
        assert sorted(inputs) == reads
        out = session(branch).run(None, inputs)
        for got, name in zip(out, joined, strict=True):
            np.testing.assert_allclose(got, values[name], rtol=1e-5, atol=1e-6)


def test_the_latency_model_takes_a_blocks_own_time_with_it(setup):
    graph, at, blocks, feeds = setup
    analysis = analyze_channels(graph)
    grown, _ = with_blocks(analysis, np.zeros(analysis.num_units, bool), blocks, [])
    n = analysis.num_units
    pairs = [(n + i, b) for i, b in enumerate(blocks)]
    model = LatencyModel(at, grown, LatencyTable(cache=False), 1.0, pairs, feeds)
    assert set(model.extras) == {u for u, _ in pairs}
    assert all(ms >= 0 for ms in model.extras.values())
    none = np.zeros(grown.num_units, bool)
    gone = none.copy()
    gone[n] = True  # the first attention block
    inside = sum(layer.time(none) for layer in model.layers if layer.block == n)
    assert model.layer_ms(gone) == pytest.approx(model.layer_ms(none) - inside
                                                  - model.extras[n])
    assert model.unit_weights()[n] == pytest.approx(inside + model.extras[n])
    # without the model's inputs, blocks take only their layers' time (as before)
    plain = LatencyModel(at, grown, LatencyTable(cache=False), 1.0, pairs)
    assert plain.extras == {}
