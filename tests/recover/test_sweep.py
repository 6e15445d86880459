"""Compensation's forward sweep: each layer's input is the graph's run to it with the weights
every layer before it has at that moment, and the refit is the one each layer's own run gives."""

import numpy as np
import pytest
from conftest import residual_convnet

from onnxprune.api import prune
from onnxprune.ir.graph import export_skeleton, import_model
from onnxprune.recover import compensate as comp
from onnxprune.recover import sweep as sweep_mod
from onnxprune.recover.sweep import Sweep, planned
from onnxprune.search.activations import activations
from onnxprune.testing import normalized


def _net(batch="batch"):
    """The residual net (the skip live across c3 and c4, an early output held to the end, c1
    reading the graph's input)."""
    return residual_convnet(batch, seed=5)


def _feeds(n):
    return {"x": np.random.default_rng(0).standard_normal((n, 3, 10, 10)).astype(np.float32)}


@pytest.mark.parametrize("batch,n,rows", [("batch", 12, None), ("batch", 12, 5), (4, 10, None)])
def test_each_input_is_the_graphs_run_with_the_weights_of_that_moment(monkeypatch, batch, n,
                                                                       rows):
    """Exactly the tensor a run of the graph to the layer gives (the same kernels on the same
    values), with every earlier layer's weights changed after its input was read, as a refit
    changes them; in one chunk, in chunks of 5, and in a fixed batch of 4 padding 10 samples."""
    if rows:
        monkeypatch.setattr(sweep_mod, "rows_for", lambda *a, **k: rows)
    graph = import_model(normalized(_net(batch)))
    feeds = _feeds(n)
    layers = [node for node in graph.nodes if node.op == "Conv"]
    sweep = planned(graph, feeds, layers)
    assert sweep is not None and sweep.at == 0
    assert len(sweep.chunks) == (3 if rows or batch == 4 else 1)
    rng = np.random.default_rng(1)
    for node in layers:
        got = sweep.input_of(node)
        want = activations(export_skeleton(graph), [node.inputs[0].name], feeds)
        assert got.shape[0] == n and np.array_equal(got, want[node.inputs[0].name])
        w = node.inputs[1]
        w.values = (w.values * rng.uniform(0.5, 1.5, w.values.shape)).astype(np.float32)
    assert sweep.runs == len(layers) - 1  # the first layer reads the graph's input
    with pytest.raises(ValueError, match="before where the sweep stands"):
        sweep.input_of(layers[2])


def test_no_sweep_when_its_live_tensors_would_hold_too_much(monkeypatch):
    graph = import_model(normalized(_net()))
    layers = [node for node in graph.nodes if node.op == "Conv"]
    # the most live at a layer, at c4: its input (12 x 10 x 10 floats), the skip (8 channels)
    # and the early output (2, held to the end): 8,800 bytes a sample
    monkeypatch.setattr(sweep_mod, "HELD_BYTES", 12 * 8_800)
    assert planned(graph, _feeds(12), layers) is not None
    monkeypatch.setattr(sweep_mod, "HELD_BYTES", 12 * 8_800 - 1)
    assert planned(graph, _feeds(12), layers) is None


def test_compensation_with_the_sweep_is_the_refit_of_each_layers_own_run(monkeypatch):
    """The same weights, bit for bit, as computing each refit layer's input by its own run of
    the graph (what compensation does where a sweep would hold too much)."""
    model = _net()
    calib = _feeds(40)
    calls = []
    real = Sweep.input_of
    monkeypatch.setattr(Sweep, "input_of", lambda self, node: calls.append(node.name) or
                        real(self, node))
    swept = prune(model, ratio=0.5, calib=calib, compensate=True, holdout=0)
    fits = swept.recovery["compensate"]
    assert len(fits) >= 4 and calls == [f["layer"] for f in fits]
    monkeypatch.setattr(comp, "planned", lambda *a, **k: None)
    calls.clear()
    each = prune(model, ratio=0.5, calib=calib, compensate=True, holdout=0)
    assert not calls and each.recovery["compensate"] == fits
    a = {i.name: i for i in swept.model.graph.initializer}
    b = {i.name: i for i in each.model.graph.initializer}
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
