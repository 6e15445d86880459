"""Linear bottlenecks turned to their principal basis (rewrite/rotate.py, the rotate pass): the
same function, channels uncorrelated and ordered, and the cut of the weakest then the best."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from onnxprune.api import prune
from onnxprune.ir.runtime import session
from onnxprune.rewrite import rotate as rot
from onnxprune.rules import layer_of
from onnxprune.search.activations import activations
from onnxprune.zoo.builder import GraphBuilder


def _chain(kind: str, seed: int = 0, between: str | None = None):
    """A first layer whose last 4 of 8 output channels are small linear mixes of the first 4,
    read directly by a second layer (``between``: an op between the two)."""
    b = GraphBuilder(seed=seed)
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((4, 4)).astype(np.float32) * 0.1  # small: lowest norms
    if kind in ("gemm", "matmul", "matmul_bias"):
        x = b.input("x", ["batch", 6] if kind == "gemm" else ["batch", 5, 6])
        w1 = rng.standard_normal((4, 6)).astype(np.float32)
        w1 = np.concatenate([w1, mix @ w1])
        if kind == "gemm":
            h = b.op("Gemm", [x, b.const(w1), b.const(np.linspace(-1, 1, 8, dtype=np.float32))],
                     transB=1, name="first")
        else:
            h = b.op("MatMul", [x, b.const(np.ascontiguousarray(w1.T))], name="first")
            if kind == "matmul_bias":  # a Linear layer as exporters write it
                h = b.op("Add", [h, b.const(np.linspace(-1, 1, 8, dtype=np.float32))])
        h = b.op(between, [h]) if between else h
        y = b.gemm(h, 8, 5, name="second") if kind == "gemm" else b.matmul(h, 8, 5, "second")
    else:
        x = b.input("x", ["batch", 3, 8, 8])
        w1 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
        w1 = np.concatenate([w1, np.einsum("ij,jabc->iabc", mix, w1)])
        h = b.op("Conv", [x, b.const(w1)], kernel_shape=[3, 3], pads=[1] * 4, name="first")
        h = b.op(between, [h]) if between else h
        y = (b.conv(h, 8, 5, name="second") if kind == "conv" else
             b.conv_transpose(h, 8, 5, name="second"))
    return b.build([y])


def _calib(model, n=64, seed=1):
    shape = [d.dim_value or n for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _error(model, pruned, calib):
    want = session(model).run(None, calib)[0]
    got = session(pruned).run(None, calib)[0]
    return float(np.abs(got - want).max() / np.abs(want).max())


KINDS = ["gemm", "matmul", "matmul_bias", "conv", "convtranspose"]


def test_the_basis_makes_channels_uncorrelated_unit_and_ordered_by_what_they_carry():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((500, 3)) @ rng.standard_normal((3, 6))  # 6 channels, 3 reached
    moment = z.T @ z / len(z)
    reader = GraphBuilder(seed=1)
    x = reader.input("x", ["batch", 6])
    graph = gs.import_onnx(reader.build([reader.gemm(x, 6, 4, name="r")]))
    view = layer_of(graph.nodes[0])
    t, t_inv = rot.basis(moment, (view,))
    np.testing.assert_allclose(t @ t_inv, np.eye(6), atol=1e-9)
    # with the floor on the diagonal (full rank): uncorrelated, and each channel's second
    # moment and its share of the reader's output both the square root of what it carries
    floored = moment + rot.FLOOR * np.trace(moment) / 6 * np.eye(6)
    second = t_inv @ floored @ t_inv.T
    w, _ = view.matrix()
    carried = t.T @ (w @ w.T) @ t
    for m in (second, carried):
        np.testing.assert_allclose(m - np.diag(np.diag(m)), 0, atol=1e-9 * np.abs(m).max())
    energy = np.diag(second) * np.diag(carried)
    assert np.all(np.diff(energy) <= 1e-12 * energy[0])  # largest first
    lifted = np.maximum(energy, energy[0] * rot.ENERGY_FLOOR)
    np.testing.assert_allclose(np.diag(second), np.sqrt(lifted), rtol=1e-6)
    # the three reached directions carry all but the floor's share
    assert energy[3:].sum() < 1e-3 * energy.sum()


@pytest.mark.parametrize("kind", KINDS)
def test_the_rotated_graph_computes_the_same_through_the_new_channels(kind):
    model = _chain(kind)
    calib = _calib(model)
    graph = gs.import_onnx(model)
    (b,) = rot.bottlenecks(graph)
    assert b.producer.node.name == "first" and [r.node.name for r in b.readers] == ["second"]
    z = activations(model, [b.tensor], calib)[b.tensor]
    t, t_inv = rot.basis(rot.second_moment(b.producer, z), b.readers)
    rot.rotate(b, t, t_inv)
    rotated = gs.export_onnx(graph)
    # float32 weights of float64 products: outputs to a few units of float32 rounding
    assert _error(model, rotated, calib) < 2e-6
    # the producer now computes T^-1 z
    z2 = activations(rotated, [b.tensor], calib)[b.tensor]
    want = b.producer.out_rows(z) @ t_inv.T
    got = b.producer.out_rows(z2)
    assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("kind", ["matmul", "conv"])  # no bias: four directions to keep
def test_the_plain_cut_of_a_rotated_bottleneck_loses_only_what_the_data_does_not_carry(kind):
    model = _chain(kind)
    calib = _calib(model)
    kw = {"ratio": "*=0.5", "calib": calib, "holdout": 0}
    turned, plain = prune(model, **kw), prune(model, rotate="off", **kw)
    assert [b["width"] for b in turned.rotated] == [8] and turned.verification.passed
    assert plain.rotated is None
    # four channels carry everything: cut, the rotated ones leave only what the floor mixed
    # in; the original ones, a share of each mix
    assert _error(model, turned.model, calib) < 1e-3 < 0.01 < _error(model, plain.model, calib)
    fresh = _calib(model, seed=7)  # data not seen: the same (it lives in the same 4 dims)
    assert _error(model, turned.model, fresh) < 1e-3


@pytest.mark.parametrize("between", ["Relu", None])
def test_only_layers_read_by_linear_layers_alone_are_bottlenecks(between):
    model = _chain("gemm", between=between)
    graph = gs.import_onnx(model)
    assert len(rot.bottlenecks(graph)) == (0 if between else 1)
    if between:
        return
    first = next(n for n in graph.nodes if n.name == "first")
    graph.outputs.append(first.outputs[0])  # a graph output: its channels are the interface
    assert rot.bottlenecks(graph) == []
    graph.outputs.pop()
    assert len(rot.bottlenecks(graph)) == 1
    assert rot.bottlenecks(graph, skip=frozenset({"second"})) == []  # a factor's pair
    reader = next(n for n in graph.nodes if n.name == "second")
    reader.inputs[1] = first.inputs[1]  # a weight another node reads: not its own
    assert rot.bottlenecks(graph) == []


def test_a_rotation_that_changes_the_function_is_left_out(monkeypatch):
    """Whatever goes wrong in a rotation (here a producer scaled 1% off its readers), the check
    against the graph before catches it, and the graph stays as it was."""
    from onnxprune.pipeline.passes import rotation

    model = _chain("gemm")
    calib = _calib(model)
    monkeypatch.setattr(rotation, "basis", lambda *a: (lambda t: (t[0], t[1] * 1.01))(
        rot.basis(*a)))
    with pytest.warns(UserWarning, match="rotate: the rotated bottlenecks changed"):
        r = prune(model, ratio="*=0.5", calib=calib, holdout=0)
    plain = prune(model, ratio="*=0.5", calib=calib, holdout=0, rotate="off")
    assert r.rotated is None
    for a, b in zip(r.model.graph.initializer, plain.model.graph.initializer, strict=True):
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(a),
                                      onnx.numpy_helper.to_array(b))


def test_rotate_on_without_calibration_data_says_it_does_nothing():
    with pytest.warns(UserWarning, match="rotate on: no effect without calibration data"):
        r = prune(_chain("gemm"), ratio=0.5, rotate="on")
    assert r.rotated is None and r.verification.passed


@pytest.mark.parametrize("criterion, rotated", [(None, True), ("activation", True),
                                                ("reconstruction", True), ("l2", False),
                                                ("fpgm", False)])
def test_auto_rotates_where_channels_rank_on_data(criterion, rotated):
    """A weight criterion ranks a rotated layer by the rotation's choice of scale: auto leaves
    those runs as they are, on rotates them all the same."""
    model = _chain("conv")
    kw = {"ratio": "*=0.5", "calib": _calib(model), "holdout": 0, "criterion": criterion}
    assert (prune(model, **kw).rotated is not None) == rotated
    assert prune(model, rotate="on", **kw).rotated is not None


def test_a_matmul_added_to_a_stream_is_no_bottleneck():
    """Only the Add of a bias vector of its own belongs to a MatMul: a residual Add joins a
    stream whose channels other layers write too."""
    for residual in (True, False):
        b = GraphBuilder(seed=0)
        x = b.input("x", ["batch", 5, 8])
        h = b.matmul(x, 8, 8, "first")
        other = x if residual else b.const(np.ones(8, np.float32))
        y = b.matmul(b.op("Add", [h, other]), 8, 3, "second")
        found = rot.bottlenecks(gs.import_onnx(b.build([y])))
        assert [f.bias is not None for f in found] == ([] if residual else [True])


def test_the_cli_says_what_it_rotated(tmp_path, capsys):
    import json

    from onnxprune.cli.main import main

    model = _chain("conv")
    path, npz = tmp_path / "m.onnx", tmp_path / "c.npz"
    onnx.save(model, str(path))
    np.savez(npz, **_calib(model))
    args = ["prune", str(path), "--ratio", "0.5", "--calib", str(npz), "--holdout", "0"]
    assert main([*args, "-o", str(tmp_path / "a.onnx"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rotated"] == [{"tensor": "first_out0",
                                                               "width": 8}]
    assert main([*args, "-o", str(tmp_path / "b.onnx")]) == 0
    assert "rotated: 1 linear bottleneck(s)" in capsys.readouterr().out
    assert main([*args, "-o", str(tmp_path / "c.onnx"), "--rotate", "off", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rotated"] is None
