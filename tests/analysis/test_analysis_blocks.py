"""Residual blocks: found in every placement real exports use (built here with onnx.helper),
refused with a reason where removal would change more than the block, removed as a rewrite
that the mask oracle proves (a gate per block on its branch) at two shapes."""

import json

import numpy as np
import onnx
import pytest

from onnxprune.analysis.blocks import with_blocks
from onnxprune.api import analyze, prune
from onnxprune.cli.main import main
from onnxprune.errors import EXIT_USAGE
from onnxprune.ir.runtime import session
from onnxprune.search.quality import get_metric
from onnxprune.zoo.builder import GraphBuilder

C, T = 16, 6


def layernorm(b, x, spelled=False, rms=False):
    if rms:  # RMSNorm as exporters spell it: x / sqrt(mean(x^2) + eps) * g
        sq = b.op("Mul", [x, x])
        ms = b.op("ReduceMean", [sq, b.const(np.array([-1], np.int64))], keepdims=1)
        den = b.op("Sqrt", [b.op("Add", [ms, b.const(np.array(1e-6, np.float32))])])
        return b.op("Mul", [b.op("Div", [x, den]), b.const(np.ones(C, np.float32))])
    if spelled:
        axes = b.const(np.array([-1], np.int64))
        mean = b.op("ReduceMean", [x, axes], keepdims=1)
        d = b.op("Sub", [x, mean])
        var = b.op("ReduceMean", [b.op("Mul", [d, d]), axes], keepdims=1)
        den = b.op("Sqrt", [b.op("Add", [var, b.const(np.array(1e-5, np.float32))])])
        return b.op("Add", [b.op("Mul", [b.op("Div", [d, den]), b.const(np.ones(C, np.float32))]),
                            b.const(np.zeros(C, np.float32))])
    return b.op("LayerNormalization", [x, b.const(np.ones(C, np.float32)),
                                       b.const(np.zeros(C, np.float32))], axis=-1)


def mlp(b, x, scale=None):
    h = b.matmul(b.relu(b.matmul(x, C, 2 * C)), 2 * C, C)
    return h if scale is None else b.op("Mul", [h, b.const(np.full(C, scale, np.float32))])


def attention(b, x):
    q, k, v = (b.matmul(x, C, C) for _ in range(3))
    scores = b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 2, 1])])
    scores = b.op("Mul", [scores, b.const(np.array(C ** -0.5, np.float32))])
    return b.matmul(b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v]), C, C)


def transformer(placement="pre", layers=2, scales=None, seed=0):
    """``layers`` transformer layers over [batch, T, C] (batch symbolic): attention and MLP
    sub-blocks, each a residual branch, in the given norm placement."""
    b = GraphBuilder(seed=seed, opset=18)  # ReduceMean's axes as an input
    x = b.input("x", ["batch", T, C])
    for i in range(layers):
        for j, sub in enumerate((attention, mlp)):
            kw = {} if sub is attention else {"scale": (scales or {}).get(i)}
            if placement == "post":  # LN(x + f(x))
                x = layernorm(b, b.op("Add", [x, sub(b, x, **kw)], name=f"add{i}{j}"))
            else:
                norm = layernorm(b, x, spelled=placement == "spelled", rms=placement == "rms")
                x = b.op("Add", [x, sub(b, norm, **kw)], name=f"add{i}{j}")
    return b.build([b.matmul(x, C, 4)])


def basic_blocks(projection=True):
    b = GraphBuilder(seed=1)
    x = b.relu(b.conv(b.input("img", ["batch", 3, 8, 8]), 3, 8))
    for i in range(2):
        y = b.conv(b.relu(b.conv(x, 8, 8)), 8, 8)
        x = b.relu(b.op("Add", [x, y], name=f"block{i}"))
    y = b.conv(b.relu(b.conv(x, 8, 16)), 16, 16)
    shortcut = b.conv(x, 8, 16, k=1)  # a projection: an Add of two branches
    x = b.relu(b.op("Add", [shortcut, y], name="projected"))
    return b.build([x])


def blocks_of(model):
    return {b.name: b for b in analyze(model).blocks}


@pytest.mark.parametrize("placement", ["pre", "spelled", "rms", "post"])
def test_transformer_sub_blocks_are_found_and_removed_under_the_oracle(placement, tmp_path):
    model = transformer(placement)
    found = blocks_of(model)
    assert sorted(found) == ["add00", "add01", "add10", "add11"]
    assert all(b.removable for b in found.values())
    assert [found[f"add{i}{j}"].kind for i in range(2) for j in range(2)] == \
        ["attention", "mlp"] * 2
    norm = {"pre": 2 * C, "spelled": 2 * C + 1, "rms": C + 1, "post": 0}[placement]
    assert found["add01"].params == 2 * C * 2 * C + norm  # the MLP's weights and its norm's
    # (with its epsilon, a float constant: graph_params counts it); a post-norm reads the sum
    r = prune(model, tmp_path / "m.onnx", remove_blocks=2)
    v = r.verification
    assert v.passed and len(v.shapes) == 2 and {s["x"][0] for s in v.shapes} == {1, 2}
    assert r.params_after == r.params_before - sum(
        found[b["name"]].params for b in r.depth["removed"])
    assert len(r.depth["removed"]) == 2 and r.plan.removed_units == 0  # blocks only
    pruned = onnx.load(str(tmp_path / "m.onnx"))
    names = {n.name for n in pruned.graph.node}
    assert not {b["name"] for b in r.depth["removed"]} & names
    # the rewrite, checked without the oracle: the original with those branches' outputs
    # zeroed computes the same
    x = np.random.default_rng(3).standard_normal((3, T, C)).astype(np.float32)
    zeroed = _zero_branches(model, [found[b["name"]] for b in r.depth["removed"]])
    np.testing.assert_allclose(session(pruned).run(None, {"x": x})[0],
                               session(zeroed).run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)


def _zero_branches(model, blocks):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    joins = {add: r for b in blocks for add, r in b.joins}
    for node in out.graph.node:
        if node.name in joins:
            zero = f"{node.name}_zero"
            out.graph.node.append(onnx.helper.make_node("Mul", [node.input[joins[node.name]],
                                                               "zero_c"], [zero]))
            node.input[joins[node.name]] = zero
    out.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros((), np.float32), "zero_c"))
    return onnx.shape_inference.infer_shapes(_sorted(out))


def _sorted(model):
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    graph.toposort()
    return gs.export_onnx(graph)


def test_influence_removes_the_block_that_changes_its_stream_least(tmp_path):
    model = transformer("pre", scales={1: 1e-3})  # layer 1's MLP barely adds anything
    r = prune(model, tmp_path / "m.onnx", remove_blocks=1)
    assert [b["name"] for b in r.depth["removed"]] == ["add11"]
    assert r.depth["removed"][0]["score"] < 1e-4 and r.depth["scored_by"] == "influence"


def test_depth_and_width_together_are_proven_together(tmp_path):
    r = prune(transformer("pre"), tmp_path / "m.onnx", remove_blocks=1, ratio=0.25)
    assert r.verification.passed and r.plan.removed_units > 0 and len(r.depth["removed"]) == 1


def test_the_oracle_tells_a_removed_block_from_a_kept_one(tmp_path):
    """The gate is what verification relies on: the pruned model does not equal the reference
    with the removed block's gate open."""
    from onnxprune.pipeline import Context, Pipeline
    from onnxprune.pipeline.passes import AnalyzeChannels, LoadModel, Normalize, RemoveChannels
    from onnxprune.pipeline.passes.depth import RemoveBlocks
    from onnxprune.select.uniform import select_uniform
    from onnxprune.verify.checks import verify_pruned

    path = tmp_path / "in.onnx"
    onnx.save(transformer("pre"), str(path))
    ctx = Context()
    Pipeline([LoadModel(path), Normalize(), AnalyzeChannels()])(ctx)
    ctx.plan = select_uniform(ctx.analysis, np.zeros(ctx.analysis.num_units), 0.0)
    Pipeline([RemoveChannels(), RemoveBlocks(remove=1)])(ctx)
    pruned, reference = ctx.skeleton(), ctx.skeleton(ctx.reference)
    removable, gone = ctx.depth["removable"], ctx.depth["removed"]
    for closed, passes in ((gone, True), ([], False)):
        analysis, removed = with_blocks(ctx.analysis, ctx.plan.removed, removable, closed)
        report = verify_pruned(pruned, reference, analysis, removed, shapes={"x": [2, T, C]})
        assert report.passed is passes


def test_cnn_blocks_with_identity_shortcuts_and_a_projection_that_is_not_one(tmp_path):
    model = basic_blocks()
    found = blocks_of(model)
    assert sorted(found) == ["block0", "block1"]  # "projected" adds two branches
    assert {b.kind for b in found.values()} == {"conv"}
    r = prune(model, tmp_path / "m.onnx", remove_blocks=2)
    assert r.verification.passed and r.params_after < r.params_before


def test_a_branch_read_elsewhere_or_by_an_output_is_kept_with_the_reason():
    b = GraphBuilder(seed=2)
    x = b.input("x", ["batch", T, C])
    h = b.relu(b.matmul(x, C, C))
    y = b.op("Add", [x, b.matmul(h, C, C)], name="shared")  # h also feeds the output head
    z = b.op("Add", [y, b.matmul(y, C, C, name="exposed")], name="watched")
    model = b.build([b.matmul(b.op("Add", [z, h]), C, 4), "exposed_out0"])
    found = blocks_of(model)
    assert not found["shared"].removable
    assert found["shared"].reason.startswith("the branch also feeds")
    assert not found["watched"].removable
    assert found["watched"].reason == "a graph output reads the branch (exposed_out0)"


def test_arithmetic_on_the_stream_is_not_a_block():
    b = GraphBuilder(seed=4)
    x = b.input("x", ["batch", C])
    cube = b.op("Mul", [b.op("Mul", [x, x]), x])
    y = b.op("Add", [x, b.op("Mul", [cube, b.const(np.array(0.044715, np.float32))])])
    assert analyze(b.build([b.gemm(y, C, 4)])).blocks == ()


def test_more_blocks_than_removable_is_one_line(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(transformer("pre"), str(path))
    code = main(["prune", str(path), "-o", str(tmp_path / "o.onnx"), "--remove-blocks", "5"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE and len(err.splitlines()) == 1
    assert "5 asked, the model has 4 removable block(s)" in err
    assert not (tmp_path / "o.onnx").exists()


def test_analyze_lists_blocks_in_json_and_the_prune_reports_them(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(basic_blocks(), str(path))
    assert main(["analyze", str(path), "--json"]) == 0
    blocks = json.loads(capsys.readouterr().out)["blocks"]
    assert [(b["name"], b["kind"], b["removable"]) for b in blocks] == [
        ("block0", "conv", True), ("block1", "conv", True)]
    assert all(b["params"] == 2 * (8 * 8 * 9 + 8) for b in blocks)
    assert main(["prune", str(path), "-o", str(tmp_path / "o.onnx"), "--remove-blocks", "1"]) == 0
    out = capsys.readouterr().out
    assert "blocks: 1 of 2 removable removed, by influence on random data: block" in out


@pytest.mark.parametrize("score", ["metric", "iterative"])
def test_the_metric_ranks_blocks_with_their_gates_closed(score, tmp_path):
    """Scored by the application metric (each block's gate closed alone, or again after each
    removal), the nearly silent block goes first and the loss it reports is the metric's."""
    model = transformer("pre", scales={0: 1e-4})  # layer 0's MLP adds almost nothing
    x = np.random.default_rng(5).standard_normal((32, T, C)).astype(np.float32)
    r = prune(model, tmp_path / "m.onnx", remove_blocks=2, calib={"x": x}, metric="cosine",
              holdout=0, block_score=score)
    removed = r.depth["removed"]
    assert r.depth["scored_by"] == score and removed[0]["name"] == "add01"
    assert 0 <= removed[0]["score"] < 1e-3 < removed[1]["score"]
    assert r.verification.passed
    # the quality reported after the cut is the written model's, blocks included
    metric = get_metric("cosine")
    ref = session(model).run(None, {"x": x})
    value = metric(session(r.model).run(None, {"x": x}), {"x": x}, ref)
    assert r.quality["after"] == pytest.approx(value, abs=1e-5) and value < 0.9999


def test_compensation_refits_the_layers_that_read_a_changed_stream(tmp_path):
    """With only blocks removed no layer lost a channel: compensation refits the first weighted
    layers after each removed block (which read a stream without it) and the metric improves."""
    x = np.random.default_rng(5).standard_normal((128, 3, 8, 8)).astype(np.float32)
    r = prune(basic_blocks(), tmp_path / "m.onnx", remove_blocks=1, calib={"img": x},
              metric="cosine", recover="compensate")
    fits = r.recovery["compensate"]
    assert len(fits) >= 1 and all(f["error_after"] < f["error_before"] for f in fits)
    stages = {s["stage"]: s for s in r.stages["stages"]}
    assert stages["compensate"]["kept"]
    assert stages["compensate"]["calib"] > stages["pruned"]["calib"]
    assert stages["compensate"]["heldout"] > stages["pruned"]["heldout"]


@pytest.mark.parametrize("strategy,method", [("sensitivity", None), ("soft", "gradient"),
                                             ("soft", "finite"), ("soft", "grid")])
def test_the_search_chooses_depth_and_width_together(tmp_path, strategy, method):
    """depth auto: removable blocks are candidates of the search beside the channel groups
    (sensitivity: a unit of its own; soft: a coefficient scaling its branch, settled on the
    hard cut); at the same parameter target it takes the near-silent block, meets the target
    and keeps more of the metric than channels alone, and the oracle proves both cuts."""
    model = transformer("pre", scales={0: 1e-4})
    x = np.random.default_rng(5).standard_normal((64, T, C)).astype(np.float32)
    more = {"soft_method": method} if method else {}
    runs = {d: prune(model, tmp_path / f"{d}.onnx", target="params=0.3", strategy=strategy,
                     depth=d, calib={"x": x}, metric="cosine", **more) for d in ("off", "auto")}
    auto, off = runs["auto"], runs["off"]
    assert off.depth is None and [b["name"] for b in auto.depth["removed"]] == ["add01"]
    assert auto.depth["in_plan"] and auto.verification.passed
    for r in runs.values():  # soft coefficients meet it within their tolerance (0.02)
        assert 1 - r.params_after / r.params_before >= (0.3 if method is None else 0.28)
    held = {r: {s["stage"]: s["heldout"] for s in runs[r].stages["stages"]} for r in runs}
    assert held["auto"]["pruned"] > held["off"]["pruned"]
    # the channel count excludes the block's unit
    data = auto.plan.removed_units - 1
    assert sum(b - a for _, (b, a) in auto.plan.widths.items()) == data


def test_depth_auto_needs_the_sensitivity_search(demo_file, tmp_path, capsys):
    code = main(["prune", str(demo_file), "-o", str(tmp_path / "o.onnx"), "--set",
                 "select.depth=auto"])
    assert code == EXIT_USAGE
    assert "depth: auto works with strategy sensitivity or soft" in capsys.readouterr().err


def parallel_transformer(layers=2):
    """GPT-J / PaLM style: x + attention(LN(x)) + MLP(LN(x)), one norm, an Add of three."""
    b = GraphBuilder(seed=6, opset=18)
    x = b.input("x", ["batch", T, C])
    for i in range(layers):
        norm = layernorm(b, x)
        x = b.op("Add", [b.op("Add", [x, attention(b, norm)], name=f"inner{i}"), mlp(b, norm)],
                 name=f"join{i}")
    return b.build([b.matmul(x, C, 4)])


def test_parallel_attention_and_mlp_are_one_block(tmp_path):
    model = parallel_transformer()
    found = blocks_of(model)
    assert sorted(found) == ["join0", "join1"]
    assert all(b.kind == "parallel" and b.removable for b in found.values())
    assert found["join0"].joins == (("inner0", 1), ("join0", 1))
    r = prune(model, tmp_path / "m.onnx", remove_blocks=1)
    assert r.verification.passed and len(r.depth["removed"]) == 1
    x = np.random.default_rng(3).standard_normal((2, T, C)).astype(np.float32)
    gone = [found[b["name"]] for b in r.depth["removed"]]
    np.testing.assert_allclose(session(r.model).run(None, {"x": x})[0],
                               session(_zero_branches(model, gone)).run(None, {"x": x})[0],
                               rtol=1e-5, atol=1e-6)


def test_post_norm_layers_stay_blocks():
    """Post-norm layers end in a norm that gating keeps (LN2(LN1(x))): no layer unit there."""
    from onnxprune.analysis.blocks import find_blocks as find
    from onnxprune.ir.graph import import_model
    from onnxprune.testing import normalized

    layers = find(import_model(normalized(transformer("post"))), unit="layer")
    assert [b.kind for b in layers] == ["attention", "mlp"] * 2


@pytest.mark.parametrize("placement", ["pre", "rms"])
def test_a_whole_layer_is_one_unit_when_asked(placement, tmp_path):
    model = transformer(placement)
    from onnxprune.analysis.blocks import find_blocks as find
    from onnxprune.ir.graph import import_model
    from onnxprune.testing import normalized

    layers = find(import_model(normalized(model)), unit="layer")
    assert [(b.kind, b.name, b.removable) for b in layers] == [
        ("layer", "add01", True), ("layer", "add11", True)]
    assert layers[0].joins == (("add00", 1), ("add01", 1))
    r = prune(model, tmp_path / "m.onnx", remove_blocks=1, block_unit="layer")
    assert r.verification.passed and [b["kind"] for b in r.depth["removed"]] == ["layer"]
    names = {n.name for n in r.model.graph.node}
    gone = r.depth["removed"][0]["name"]
    assert not {gone, {"add01": "add00", "add11": "add10"}[gone]} & names


def two_components():
    """Two components by name scope, each with one residual MLP block."""
    b = GraphBuilder(seed=7)
    x = b.input("x", ["batch", C])
    for scope in ("enc", "pi"):
        h = b.op("Relu", [b.op("MatMul", [x, b.weight(C, C)], name=f"/{scope}/fc1/MatMul")],
                 name=f"/{scope}/act/Relu")
        f = b.op("MatMul", [h, b.weight(C, C)], name=f"/{scope}/fc2/MatMul")
        x = b.op("Add", [x, f], name=f"/{scope}/Add")
    return b.build([b.op("MatMul", [x, b.weight(C, 4)], name="/pi/head/MatMul")])


def test_a_component_that_keeps_its_weights_keeps_its_blocks(tmp_path):
    model = two_components()
    r = prune(model, tmp_path / "m.onnx", components="auto", ratio="*=0,pi=0",
              remove_blocks=1)
    assert [b["name"] for b in r.depth["removed"]] == ["/enc/Add"] and r.depth["removable"] == 1
    with pytest.raises(Exception, match="2 asked, the model has 1 removable"):
        prune(model, components="auto", ratio="*=0,pi=0", remove_blocks=2)
    r = prune(model, tmp_path / "n.onnx", components="auto", remove_blocks=2)
    assert r.depth["removable"] == 2 and r.verification.passed


def test_analyze_with_data_gives_each_block_its_influence(tmp_path, capsys):
    model = transformer("pre", scales={1: 1e-3})
    x = np.random.default_rng(9).standard_normal((16, T, C)).astype(np.float32)
    result = analyze(model, calib={"x": x})
    assert set(result.influence) == {"add00", "add01", "add10", "add11"}
    assert min(result.influence, key=result.influence.get) == "add11"  # the scaled-down MLP
    r = prune(model, remove_blocks=1, calib={"x": x}, holdout=0)
    assert r.depth["removed"][0]["score"] == pytest.approx(result.influence["add11"], rel=1e-3)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert main(["analyze", str(path), "--calib", "random:4", "--json"]) == 0
    blocks = json.loads(capsys.readouterr().out)["blocks"]
    assert all(0 <= b["influence"] <= 2 for b in blocks)
