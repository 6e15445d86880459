"""A TD-MPC-style agent for gymnasium's Pendulum-v1: a multi-component model to prune.

The :class:`Agent` has five components, exported as five ONNX name scopes:

- ``encoder``: observation ``[cos th, sin th, th_dot]`` -> latent ``z``;
- ``dynamics``: ``(z, a)`` -> next latent, trained to match the encoding of the next observation;
- ``reward``: ``(z, a)`` -> reward;
- ``pi``: ``z`` -> action in ``[-2, 2]``;
- ``q``: ``(z, a)`` -> discounted return of acting with ``a`` and then like the data's policy.

:func:`onnxprune.zoo.control_train.train_agent` collects rollouts of a hand-written controller (:func:`expert_action`) with
action noise, behaviour-clones ``pi`` from the controller's clean actions, and trains the
encoder, dynamics, reward and ``q`` jointly TD-MPC style: the latent is unrolled through
``dynamics`` for :data:`HORIZON` steps from the first encoding, and at every step the latent is
pulled to the (gradient-stopped) encoding of the observed next state, the reward head is fitted
to the observed reward, and ``q`` to the Monte-Carlo discounted return (``gamma =``
:data:`GAMMA`). Losses are weighted by ``0.5 ** step`` along the unroll.

:func:`closed_loop_return` drives the ONNX model through onnxruntime in the environment:

- ``mode="policy"`` acts with ``pi_action`` (the ``action`` input gets a dummy zero);
- ``mode="plan"`` is TD-MPC's planner: MPPI over action sequences of :data:`HORIZON` steps in
  latent space, each sequence scored by the predicted rewards along the ``dynamics`` rollout
  plus the discounted terminal value ``q(z_H, pi(z_H))``, with the policy's own rollout as one
  of the candidates (64 Gaussian samples around a warm-started mean, 4 iterations, the 8 best
  sequences averaged with weights ``exp(0.5 * (score - best))``; the first action of the mean is
  taken). The planner needs latent inputs, which the exported model deliberately does not
  have, so it cuts the one ONNX model it is given into parts with ``onnx.utils.Extractor`` at
  the tensor the ``/encoder/`` scope hands to the other components: ``obs -> z``,
  ``z -> pi_action``, ``(z, action) -> (next_latent, reward)`` and ``(z, action) -> q``. A
  pruned model is therefore planned with exactly its own weights; it must keep ``next_latent``
  as wide as the encoder's output, since the planner feeds one back as the other. Every
  planner call is one onnxruntime run over all samples.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import onnx
import onnx.shape_inference
import onnx.utils
import onnxruntime as ort
import torch
from torch import nn

from .torch_zoo import quiet

__all__ = [
    "COMPONENTS",
    "GAMMA",
    "HORIZON",
    "Agent",
    "closed_loop_return",
    "episode_return",
    "expert_action",
    "plan_return",
    "policy_return",
    "export_agent",
    "random_policy_return",
]

ENV_ID = "Pendulum-v1"
COMPONENTS = ("encoder", "dynamics", "reward", "pi", "q")
GAMMA = 0.95
HORIZON = 5
MAX_TORQUE = 2.0

# Discrete-time LQR gain of Pendulum-v1 linearised at the top (Q = diag(1, 0.1), R = 0.01).
_LQR_GAIN = np.array([12.966, 3.282])
_GRAVITY_TERM = 15.0  # 3 g / (2 l): th_ddot = 15 sin th + 3 u


def expert_action(obs: np.ndarray) -> np.ndarray:
    """A known-good Pendulum-v1 controller: energy pumping far from the top, LQR near it.

    With ``E = th_dot**2 / 2 + 15 cos th`` the dynamics give ``dE/dt = 3 u th_dot``, so
    ``u ~ (E_top - E) th_dot`` drives the energy to that of resting at the top.
    """
    cos, sin, th_dot = (float(v) for v in np.asarray(obs).reshape(3))
    if cos > 0.7:
        u = -float(_LQR_GAIN @ (np.arctan2(sin, cos), th_dot))
    else:
        energy = 0.5 * th_dot**2 + _GRAVITY_TERM * cos
        u = 0.3 * (_GRAVITY_TERM - energy) * th_dot
    return np.clip(np.array([u], dtype=np.float32), -MAX_TORQUE, MAX_TORQUE)


def _mlp(*sizes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


class _LatentActionHead(nn.Module):
    """An MLP on ``concat(z, a)``."""

    def __init__(self, *sizes: int):
        super().__init__()
        self.net = _mlp(*sizes)

    def forward(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, action], dim=-1))


class _Policy(nn.Module):
    def __init__(self, *sizes: int):
        super().__init__()
        self.net = _mlp(*sizes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return MAX_TORQUE * torch.tanh(self.net(z))


class Agent(nn.Module):
    """Encoder, latent dynamics, reward, policy and value: ``forward(obs, action)`` returns
    ``(pi_action, next_latent, reward, q)`` with ``pi_action = pi(encoder(obs))`` and the rest
    computed from ``(encoder(obs), action)``."""

    def __init__(self, latent: int = 32, hidden: int = 64):
        super().__init__()
        self.encoder = _mlp(3, hidden, hidden, latent)
        self.dynamics = _LatentActionHead(latent + 1, hidden, hidden, latent)
        self.reward = _LatentActionHead(latent + 1, hidden, 1)
        self.pi = _Policy(latent, hidden, hidden, 1)
        self.q = _LatentActionHead(latent + 1, hidden, hidden, 1)

    def forward(
        self, obs: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder(obs)
        return self.pi(z), self.dynamics(z, action), self.reward(z, action), self.q(z, action)


def _scope(node: onnx.NodeProto) -> str:
    return node.name.split("/")[1] if node.name.startswith("/") else ""


def _unshare_concats(graph: onnx.GraphProto) -> None:
    """Give every component its own copy of a Concat it reads from another component.

    The exporter merges the identical ``concat(z, a)`` of dynamics, reward and q into one node.
    """
    for node in [n for n in graph.node if n.op_type == "Concat"]:
        copies: dict[str, onnx.NodeProto] = {}
        for consumer in graph.node:
            scope = _scope(consumer)
            for i, name in enumerate(consumer.input):
                if name != node.output[0] or scope == _scope(node):
                    continue
                if scope not in copies:
                    copy = copies[scope] = onnx.NodeProto()
                    copy.CopyFrom(node)
                    copy.name, copy.output[0] = f"/{scope}/Concat", f"/{scope}/Concat_output_0"
                consumer.input[i] = copies[scope].output[0]
        at = list(graph.node).index(node) + 1
        for k, copy in enumerate(copies.values()):
            graph.node.insert(at + k, copy)


def export_agent(agent: Agent, path: str | os.PathLike, *, dynamic_batch: bool = True) -> str:
    """Export ``agent`` to ONNX at ``path`` (TorchScript exporter, opset 17); returns the path.

    Inputs ``obs [B, 3]`` and ``action [B, 1]``; outputs ``pi_action``, ``next_latent``,
    ``reward`` and ``q``. Every node is named under its component's scope (``/encoder/...``),
    and each component computes its own inputs from ``z`` and ``action``.
    """
    path = os.fspath(path)
    agent.eval()
    inputs, outputs = ["obs", "action"], ["pi_action", "next_latent", "reward", "q"]
    args = (torch.zeros(1, 3), torch.zeros(1, 1))
    with quiet(), torch.no_grad():
        torch.onnx.export(
            agent,
            args,
            path,
            dynamo=False,
            opset_version=17,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={n: {0: "batch"} for n in inputs + outputs} if dynamic_batch else None,
        )
    model = onnx.load(path)
    _unshare_concats(model.graph)
    scopes = {_scope(node) for node in model.graph.node}
    if scopes != set(COMPONENTS):
        raise RuntimeError(f"exported graph has scopes {sorted(scopes)}, expected {COMPONENTS}")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _latent_tensor(graph: onnx.GraphProto) -> str:
    """The tensor the ``/encoder/`` scope hands to the other components."""
    inside = [n for n in graph.node if n.name.startswith("/encoder/")]
    produced = {o for n in inside for o in n.output}
    used = {i for n in graph.node if not n.name.startswith("/encoder/") for i in n.input}
    found = sorted(produced & used)
    if len(found) != 1:
        raise ValueError(f"expected one tensor leaving the /encoder/ scope, found {found}")
    return found[0]


class _Planner:
    """MPPI in latent space (TD-MPC): score = sum_t gamma^t r_t + gamma^H q(z_H, pi(z_H))."""

    def __init__(
        self,
        model: onnx.ModelProto,
        *,
        seed: int = 0,
        horizon: int = HORIZON,
        samples: int = 64,
        iterations: int = 4,
        elites: int = 8,
        temperature: float = 0.5,
    ):
        z = self.z_name = _latent_tensor(model.graph)
        part = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model)).extract_model
        self.encode = _session(part(["obs"], [z]))
        self.pi = _session(part([z], ["pi_action"]))
        self.model = _session(part([z, "action"], ["next_latent", "reward"]))
        self.q = _session(part([z, "action"], ["q"]))
        latent = self.encode.run(None, {"obs": np.zeros((1, 3), np.float32)})[0].shape[1]
        next_latent = self._step(np.zeros((1, latent), np.float32), np.zeros((1, 1), np.float32))
        if next_latent[0].shape[1] != latent:
            raise ValueError(
                f"plan mode feeds next_latent (width {next_latent[0].shape[1]}) back into the "
                f"components that read the encoder output (width {latent}); they must match"
            )
        self.horizon, self.samples, self.iterations = horizon, samples, iterations
        self.elites, self.temperature = elites, temperature
        self.rng = np.random.default_rng(seed)
        self.mean = np.zeros(horizon, np.float32)

    def reset(self) -> None:
        self.mean[:] = 0.0

    def _step(self, z: np.ndarray, action: np.ndarray) -> list[np.ndarray]:
        return self.model.run(None, {self.z_name: z, "action": action})

    def _policy(self, z: np.ndarray) -> np.ndarray:
        return self.pi.run(None, {self.z_name: z})[0][:, 0]

    def _rollout(self, z: np.ndarray, actions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Scores of action sequences ``[N, H]`` from latents ``z [N, L]``; ``None``: follow pi."""
        score = np.zeros(z.shape[0], np.float32)
        taken = np.zeros((z.shape[0], self.horizon), np.float32)
        discount = 1.0
        for t in range(self.horizon):
            taken[:, t] = self._policy(z) if actions is None else actions[:, t]
            next_z, reward = self._step(z, taken[:, t : t + 1])
            score += discount * reward[:, 0]
            discount *= GAMMA
            z = next_z
        feed = {self.z_name: z, "action": self._policy(z)[:, None]}
        score += discount * self.q.run(None, feed)[0][:, 0]
        return score, taken

    def act(self, obs: np.ndarray) -> np.ndarray:
        z0 = self.encode.run(None, {"obs": obs.reshape(1, 3).astype(np.float32)})[0]
        pi_score, pi_seq = self._rollout(z0, None)
        z = np.repeat(z0, self.samples, axis=0)
        mean, std = self.mean, np.full(self.horizon, MAX_TORQUE / 2, np.float32)
        for _ in range(self.iterations):
            noise = self.rng.standard_normal((self.samples, self.horizon)).astype(np.float32)
            seqs = np.clip(mean + std * noise, -MAX_TORQUE, MAX_TORQUE)
            scores, _ = self._rollout(z, seqs)
            scores, seqs = np.concatenate([scores, pi_score]), np.concatenate([seqs, pi_seq])
            top = np.argsort(scores)[-self.elites :]
            w = np.exp(self.temperature * (scores[top] - scores[top].max()))
            w /= w.sum()
            mean = (w @ seqs[top]).astype(np.float32)
            std = np.maximum(np.sqrt(w @ (seqs[top] - mean) ** 2), 0.05).astype(np.float32)
        self.mean = np.append(mean[1:], mean[-1])
        return mean[:1].copy()


def episode_return(
    act: Callable[[np.ndarray], np.ndarray],
    episodes: int = 10,
    seed: int = 0,
    reset: Callable[[], None] | None = None,
) -> float:
    """Mean return of Pendulum-v1 (200 steps) acting with ``act(obs) -> action [1]``.

    Episode ``i`` starts from ``env.reset(seed=seed + i)``; ``reset`` is called before each.
    """
    env = gym.make(ENV_ID)
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        if reset is not None:
            reset()
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def closed_loop_return(
    model_path_or_proto: str | os.PathLike | onnx.ModelProto,
    episodes: int = 10,
    seed: int = 0,
    mode: str = "policy",
) -> float:
    """Mean return over ``episodes`` Pendulum-v1 episodes (seeds ``seed, seed + 1, ...``)
    driven by the ONNX agent in onnxruntime: with ``pi_action`` (``mode="policy"``) or with
    the latent MPPI planner (``mode="plan"``)."""
    model = model_path_or_proto
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model))
    if mode == "policy":
        sess = _session(model)
        dummy = np.zeros((1, 1), np.float32)

        def act(obs):
            feed = {"obs": obs.reshape(1, 3).astype(np.float32), "action": dummy}
            return sess.run(["pi_action"], feed)[0][0]

        return episode_return(act, episodes, seed)
    if mode == "plan":
        planner = _Planner(model, seed=seed)
        return episode_return(planner.act, episodes, seed, reset=planner.reset)
    raise ValueError(f"unknown mode {mode!r}; expected 'policy' or 'plan'")


SEARCH_EPISODES, SEARCH_SEED = 5, 1000


def policy_return(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]]) -> float:
    """An onnxprune application metric (``--metric onnxprune.zoo.control:policy_return``):
    the mean closed-loop return of the model's policy, ``run(feeds) -> outputs`` being the model
    under evaluation. Uses episodes seeded apart from :func:`closed_loop_return`'s defaults."""
    dummy = np.zeros((1, 1), np.float32)

    def act(obs):
        feeds = {"obs": obs.reshape(1, 3).astype(np.float32), "action": dummy}
        return run(feeds)[0][0]

    return episode_return(act, SEARCH_EPISODES, SEARCH_SEED)


def plan_return(model: onnx.ModelProto) -> float:
    """An onnxprune application metric (``--metric onnxprune.zoo.control:plan_return``): the
    mean closed-loop return of the latent planner over the candidate model's own dynamics,
    reward and Q (a few episodes seeded apart from :func:`closed_loop_return`'s defaults)."""
    try:
        return closed_loop_return(model, episodes=PLAN_SEARCH_EPISODES, seed=SEARCH_SEED,
                                  mode="plan")
    except ValueError:  # the latent no longer fits the planner
        return -2000.0


PLAN_SEARCH_EPISODES = 2


def random_policy_return(episodes: int = 10, seed: int = 0) -> float:
    """Mean return of uniformly random torques, on the same episode seeds as
    :func:`closed_loop_return`."""
    rng = np.random.default_rng(seed)
    return episode_return(
        lambda obs: rng.uniform(-MAX_TORQUE, MAX_TORQUE, 1).astype(np.float32), episodes, seed
    )
