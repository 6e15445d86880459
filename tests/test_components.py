"""Component-aware analysis: partitions from scopes / a TOML map / boundary tensors, flows,
flow policies, per-component budgets, and the report."""

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from onnxprune.analysis.components import find_components, find_flows
from onnxprune.api import analyze, prune
from onnxprune.cli.main import main
from onnxprune.errors import UsageError
from onnxprune.testing import check_oracle
from onnxprune.zoo.builder import GraphBuilder


def agent(scoped: bool = True):
    """A small multi-component agent: encoder -> latent z read by dynamics (with the action),
    reward, policy and value heads."""
    b = GraphBuilder(seed=2)
    n = (lambda s: s) if scoped else (lambda s: s.strip("/").replace("/", "_"))
    obs = b.input("obs", ["batch", 6])
    act = b.input("action", ["batch", 2])
    h = b.op("Relu", [b.gemm(obs, 6, 32, name=n("/encoder/fc1/Gemm"))], name=n("/encoder/act1/Relu"))
    z = b.gemm(h, 32, 16, name=n("/encoder/fc2/Gemm"))
    za = b.op("Concat", [z, act], axis=1, name=n("/Concat"))
    d = b.op("Relu", [b.gemm(za, 18, 24, name=n("/dynamics/fc1/Gemm"))], name=n("/dynamics/r/Relu"))
    nz = b.gemm(d, 24, 16, name=n("/dynamics/fc2/Gemm"))
    r = b.op("Relu", [b.gemm(za, 18, 12, name=n("/reward/fc1/Gemm"))], name=n("/reward/r/Relu"))
    rew = b.gemm(r, 12, 1, name=n("/reward/fc2/Gemm"))
    p = b.op("Relu", [b.gemm(z, 16, 20, name=n("/pi/fc1/Gemm"))], name=n("/pi/r/Relu"))
    pi = b.op("Tanh", [b.gemm(p, 20, 2, name=n("/pi/fc2/Gemm"))], name=n("/pi/t/Tanh"))
    q = b.op("Relu", [b.gemm(za, 18, 12, name=n("/q/fc1/Gemm"))], name=n("/q/r/Relu"))
    qv = b.gemm(q, 12, 1, name=n("/q/fc2/Gemm"))
    return b.build([pi, nz, rew, qv], "agent")


def _graph(model):
    return gs.import_onnx(model)


def test_scopes_partition_and_flows():
    g = _graph(agent())
    comps = find_components(g, "auto")
    assert comps.names == ("encoder", "dynamics", "reward", "pi", "q")
    assert comps.of_node["/Concat"] == "dynamics"  # plumbing goes with its (first) consumer
    flows = {f.tensor: f for f in find_flows(g, comps)}
    z = next(f for f in flows.values() if f.src == "encoder")
    assert set(z.dst) == {"dynamics", "pi"} and z.policy == "own"
    za = next(f for f in flows.values() if f.src == "dynamics")
    assert set(za.dst) == {"reward", "q"}


def test_tf_style_scopes_with_a_common_root():
    b = GraphBuilder()
    x = b.input("x", [1, 4])
    h = b.relu(b.gemm(x, 4, 8, name="model/encoder/dense/MatMul"))
    y = b.gemm(h, 8, 3, name="model/head/dense/MatMul")
    comps = find_components(_graph(b.build([y])), "auto")
    assert comps.names == ("encoder", "head") and comps.depth == 1


def test_scope_depth_is_settable():
    b = GraphBuilder()
    x = b.input("x", [1, 4])
    h = b.relu(b.gemm(x, 4, 8, name="/body/a/x/Gemm"))
    h = b.relu(b.gemm(h, 8, 8, name="/body/a/y/Gemm"))
    y = b.gemm(h, 8, 3, name="/body/b/z/Gemm")
    g = _graph(b.build([y]))
    assert find_components(g, "auto").names == ("a", "b")  # the common root 'body' is dropped
    assert find_components(g, "auto", depth=2).names == ("a/x", "a/y", "b/z")


def test_dynamo_style_names_use_weight_names():
    b = GraphBuilder()
    x = b.input("x", [1, 4])
    w1 = b.const(np.ones((8, 4), np.float32))
    b.inits[-1].name = "encoder.0.weight"
    h = b.relu(b.op("Gemm", [x, "encoder.0.weight"], transB=1, name="node_linear"))
    y = b.op("Gemm", [h, b.const(np.ones((3, 8), np.float32))], transB=1, name="node_linear_1")
    b.inits[-1].name = "head.weight"
    b.nodes[-1].input[1] = "head.weight"
    del w1
    comps = find_components(_graph(b.build([y])), "auto")
    assert comps.of_node["node_linear"] == "encoder" and comps.of_node["node_linear_1"] == "head"


def test_toml_map_globs_and_policies(tmp_path):
    spec = tmp_path / "c.toml"
    spec.write_text('default_policy = "freeze"\n[components.perception]\nnodes = ["/encoder/*"]\n'
                    '[components.control]\nnodes = ["/pi/*", "/q/*", "/reward/*", "/dynamics/*"]\n'
                    '[flows]\n"fc2_1" = "own"\n')
    g = _graph(agent())
    comps = find_components(g, str(spec))
    assert comps.names == ("perception", "control") and comps.source == "map"
    z = next(f for f in find_flows(g, comps) if f.src == "perception")
    assert z.policy == "freeze"


def test_toml_map_errors(tmp_path):
    g = _graph(agent())
    bad = tmp_path / "bad.toml"
    bad.write_text('[components.a]\nnodes = ["/pi/*"]\n[components.b]\nnodes = ["/pi/fc1/*"]\n')
    with pytest.raises(UsageError, match="matches components a and b"):
        find_components(g, str(bad))
    bad.write_text('default_policy = "maybe"\n')
    with pytest.raises(UsageError, match="not one of"):
        find_components(g, str(bad))
    bad.write_text('boundaries = ["no_such_tensor"]\n')
    with pytest.raises(UsageError, match="no_such_tensor"):
        find_components(g, str(bad))
    bad.write_text("not toml [")
    with pytest.raises(UsageError, match="not valid TOML"):
        find_components(g, str(bad))
    with pytest.raises(UsageError, match="no such file"):
        find_components(g, str(tmp_path / "missing.toml"))


def test_boundary_tensors_split_unnamed_graphs(tmp_path):
    model = agent(scoped=False)
    g = _graph(model)
    assert find_components(g, "auto").names == ("model",)  # names say nothing
    z_name = [n for n in g.nodes if n.op == "Gemm"][1].outputs[0].name  # the latent
    spec = tmp_path / "b.toml"
    spec.write_text(f'boundaries = ["{z_name}"]\n')
    comps = find_components(g, str(spec))
    # cut at the latent: the encoder, the policy (reads z alone) and the concat-fed heads
    assert comps.names == ("part0", "part1", "part2")
    of = comps.of_node
    assert of["encoder_fc1_Gemm"] == of["encoder_fc2_Gemm"] == "part0"
    assert of["pi_fc1_Gemm"] == of["pi_fc2_Gemm"]
    assert of["Concat"] == of["dynamics_fc1_Gemm"] == of["reward_fc2_Gemm"] == of["q_fc1_Gemm"]
    assert len({of["encoder_fc1_Gemm"], of["pi_fc1_Gemm"], of["Concat"]}) == 3


@pytest.mark.parametrize("policy", ["own", "couple", "freeze"])
def test_policies_change_the_groups(policy):
    res = analyze(agent(), components="auto", flow_policy=policy)
    groups = [g for g in res.channels.groups if not g.frozen]
    spanning = [g for g in res.channels.groups if g.component and "+" in g.component]
    if policy == "own":
        assert not spanning  # groups never span components
        assert res.stats.largest_layers < res.plain.largest_layers
    elif policy == "couple":
        assert spanning and res.stats == res.plain
    else:
        assert all(g.frozen for g in spanning)
        assert len(groups) < res.plain.prunable
    check_oracle(agent(), trials=4, components="auto", flow_policy=policy)


def test_group_sizes_both_ways_on_the_agent():
    res = analyze(agent(), components="auto")
    # plain: the latent z couples the encoder's output with the dynamics, reward, q (via the
    # concat) and pi first layers: one group of 5 layers; component-aware: at most 2
    assert res.plain.largest_layers == 5
    assert res.stats.largest_layers == 2
    assert res.stats.prunable > res.plain.prunable


def test_per_component_budget_keeps_a_component_byte_identical():
    model = agent()
    r = prune(model, ratio="*=0.5,pi=0", components="auto")
    assert r.verification.passed and r.params_after < r.params_before
    before = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    after = {i.name: onnx.numpy_helper.to_array(i) for i in r.model.graph.initializer}
    pi_nodes = [n for n in r.model.graph.node if n.name.startswith("/pi/")]
    pi_weights = [t for n in pi_nodes for t in n.input if t in before]
    assert len(pi_weights) == 4
    for name in pi_weights:
        assert name in after and after[name].tobytes() == before[name].tobytes()
    enc = [n for n in r.model.graph.node if n.name == "/encoder/fc1/Gemm"][0]
    assert after[enc.input[1]].shape[0] == 16  # the encoder was cut


def test_budget_errors():
    with pytest.raises(UsageError, match="unknown component"):
        prune(agent(), ratio="*=0.5,planner=0", components="auto")
    with pytest.raises(UsageError, match="outside"):
        prune(agent(), ratio="*=1.5", components="auto")
    with pytest.raises(UsageError, match="not a number"):
        prune(agent(), ratio="*=half", components="auto")


def test_uniform_ratio_agrees_across_flows():
    r = prune(agent(), ratio=0.5, components="auto")
    assert r.verification.passed
    # linked channels share one score, so the encoder and the heads reading z pick the same
    # channels: no adapter is left on the z -> pi edge
    gathers = [n for n in r.model.graph.node if n.op_type == "Gather"]
    assert not any("/pi/" in n.name for n in gathers)
    for n in gathers:  # what is left only narrows the concat for one head
        assert n.input[0] == "/Concat_out0"


def test_cli_analyze_components_json_and_graph(tmp_path, capsys):
    path = tmp_path / "agent.onnx"
    onnx.save(agent(), str(path))
    dot = tmp_path / "g.dot"
    assert main(["analyze", str(path), "--components", "auto", "--json", "--graph", str(dot)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in data["components"]} == {"encoder", "dynamics", "reward", "pi", "q"}
    assert all({"name", "nodes", "params", "macs", "groups"} <= c.keys() for c in data["components"])
    flow = next(f for f in data["flows"] if f["from"] == "encoder")
    assert flow["channels"] == 16 and flow["policy"] == "own" and set(flow["to"]) == {"dynamics", "pi"}
    assert all(g["component"] for g in data["groups"])
    assert data["group_sizes"]["plain"]["largest_layers"] == 5
    text = dot.read_text()
    assert text.count("subgraph") == 5 and "#d62728" in text  # flows drawn in red
    png = tmp_path / "g.png"
    assert main(["analyze", str(path), "--components", "auto", "--graph", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
