import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gymnasium")

from onnxprune.zoo import control  # noqa: E402
from onnxprune.zoo.control_train import train_agent  # noqa: E402

OUTPUTS = ["pi_action", "next_latent", "reward", "q"]
OPS = {"Gemm", "Concat", "Elu", "Tanh", "Mul", "Constant"}


@pytest.fixture(scope="module")
def short_agent():
    return train_agent(seconds=20, seed=0)


@pytest.fixture(scope="module")
def short_model(short_agent, tmp_path_factory):
    return control.export_agent(short_agent, tmp_path_factory.mktemp("control") / "agent.onnx")


def test_expert_swings_up_and_balances():
    assert control.episode_return(control.expert_action, episodes=10, seed=0) > -250


def test_training_is_deterministic():
    a, b = (train_agent(seconds=0.5, seed=3) for _ in range(2))
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_export_scopes_ops_and_outputs(short_agent, short_model):
    graph = onnx.load(short_model).graph
    names = [node.name for node in graph.node]
    for component in control.COMPONENTS:
        assert any(n.startswith(f"/{component}/") for n in names), component
    assert all(n.split("/")[1] in control.COMPONENTS for n in names)
    assert {"/dynamics/Concat", "/reward/Concat", "/q/Concat"} <= set(names)
    assert {node.op_type for node in graph.node} <= OPS
    assert [i.name for i in graph.input] == ["obs", "action"]
    assert [o.name for o in graph.output] == OUTPUTS

    sess = ort.InferenceSession(short_model, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (1, 4):
        theta = rng.uniform(-np.pi, np.pi, batch)
        obs = np.stack([np.cos(theta), np.sin(theta), rng.uniform(-8, 8, batch)], 1)
        feed = {
            "obs": obs.astype(np.float32),
            "action": rng.uniform(-2, 2, (batch, 1)).astype(np.float32),
        }
        got = sess.run(OUTPUTS, feed)
        with torch.no_grad():
            expected = short_agent(*(torch.from_numpy(v) for v in feed.values()))
        for name, g, e in zip(OUTPUTS, got, expected, strict=True):
            assert g.shape == tuple(e.shape), name
            np.testing.assert_allclose(g, e.numpy(), rtol=1e-5, atol=1e-4, err_msg=name)


def test_short_trained_policy_beats_random(short_model):
    random_return = control.random_policy_return(episodes=10, seed=0)
    policy_return = control.closed_loop_return(short_model, episodes=10, seed=0)
    assert random_return < -1000
    assert policy_return > -400


def test_plan_mode_runs(short_model):
    model = onnx.load(short_model)
    assert math.isfinite(control.closed_loop_return(model, episodes=1, seed=0, mode="plan"))


def test_unknown_mode_is_rejected(short_model):
    with pytest.raises(ValueError, match="unknown mode"):
        control.closed_loop_return(short_model, episodes=1, mode="imitate")


@pytest.mark.slow
def test_default_budget_policy(tmp_path):
    path = control.export_agent(train_agent(seed=0), tmp_path / "agent.onnx")
    assert control.closed_loop_return(path, episodes=10, seed=0) > -300
