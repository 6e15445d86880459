"""Training the control agent (:class:`onnxprune.zoo.control.Agent`) TD-MPC style on noisy
rollouts of the hand-written Pendulum controller; see the ``control`` module for the model."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from .control import ENV_ID, GAMMA, HORIZON, MAX_TORQUE, Agent, expert_action

__all__ = ["train_agent"]


def _rollouts(episodes: int, seed: int) -> dict[str, np.ndarray]:
    """Episodes of the expert with Gaussian action noise (a noise level per episode)."""
    env = gym.make(ENV_ID)
    steps = env.spec.max_episode_steps
    rng = np.random.default_rng(seed)
    obs = np.zeros((episodes, steps + 1, 3), np.float32)
    act = np.zeros((episodes, steps, 1), np.float32)
    rew = np.zeros((episodes, steps), np.float32)
    for e in range(episodes):
        sigma = rng.uniform(0.0, 1.5)
        obs[e, 0], _ = env.reset(seed=int(rng.integers(2**31)))
        for t in range(steps):
            a = expert_action(obs[e, t]) + sigma * rng.standard_normal(1)
            act[e, t] = np.clip(a, -MAX_TORQUE, MAX_TORQUE)
            obs[e, t + 1], rew[e, t], *_ = env.step(act[e, t])
    env.close()
    ret = np.zeros_like(rew)
    ret[:, -1] = rew[:, -1]
    for t in range(steps - 2, -1, -1):
        ret[:, t] = rew[:, t] + GAMMA * ret[:, t + 1]
    expert = np.apply_along_axis(expert_action, -1, obs)
    return {"obs": obs, "act": act, "rew": rew, "ret": ret, "expert": expert}


# Training is a fixed number of optimisation steps per second of budget (so it is
# deterministic), about half of what one busy CPU core manages. The networks are small enough
# that one torch thread is faster than two.
_STEPS_PER_SECOND = 20
_EPISODES = 100
_BATCH = 256
_LR = 3e-3
# Reward and return targets are divided by these while training; the scales are folded into
# the heads' last layers afterwards, so the exported model predicts environment units.
_REWARD_SCALE = 5.0
_RETURN_SCALE = 50.0
# The time limit truncates the returns of an episode's last steps: no value target there.
_RETURN_TAIL = 50


def _losses(
    agent: Agent, data: dict[str, torch.Tensor], e: torch.Tensor, t: torch.Tensor
) -> dict[str, torch.Tensor]:
    """TD-MPC losses on windows of ``HORIZON + 1`` observations (episodes ``e``, steps ``t``)."""
    obs, expert = data["obs"][e, t], data["expert"][e, t]
    t = t[:, :-1]
    act, rew, ret = data["act"][e, t], data["rew"][e, t], data["ret"][e, t]
    has_return = (t < data["rew"].shape[1] - _RETURN_TAIL).float()

    latents = agent.encoder(obs)
    targets = latents[:, 1:].detach()
    z = latents[:, 0]
    consistency = reward = value = torch.zeros(())
    for k in range(HORIZON):
        weight, a = 0.5**k, act[:, k]
        reward = reward + weight * (agent.reward(z, a)[:, 0] - rew[:, k] / _REWARD_SCALE).square()
        err = (agent.q(z, a)[:, 0] - ret[:, k] / _RETURN_SCALE).square() * has_return[:, k]
        value = value + weight * err
        z = agent.dynamics(z, a)
        consistency = consistency + weight * (z - targets[:, k]).square().mean(-1)
    bc = (agent.pi(latents) - expert).square().mean((1, 2))
    return {
        "consistency": consistency.mean(),
        "reward": reward.mean(),
        "q": value.mean(),
        "bc": bc.mean(),
    }


def train_agent(seconds: float = 120, seed: int = 0, progress: bool = False) -> Agent:
    """Train an :class:`Agent` on noisy expert rollouts within about ``seconds`` of CPU time.

    Deterministic for a ``seed``: the number of steps is fixed by ``seconds``; training stops
    early only if it would overrun the budget (on a much slower or heavily loaded machine).
    Loss: ``2 * consistency + reward + q + bc`` (see the module docstring), Adam with a cosine
    learning-rate schedule.
    """
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        data = {k: torch.from_numpy(v) for k, v in _rollouts(_EPISODES, seed).items()}
        n_episodes, n_steps = data["rew"].shape
        agent = Agent()
        n_updates = max(1, int(seconds * _STEPS_PER_SECOND))
        opt = torch.optim.Adam(agent.parameters(), lr=_LR)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, n_updates, eta_min=0.1 * _LR)
        for step in range(n_updates):
            e = torch.randint(n_episodes, (_BATCH, 1), generator=gen)
            t = torch.randint(n_steps - HORIZON + 1, (_BATCH, 1), generator=gen)
            losses = _losses(agent, data, e, t + torch.arange(HORIZON + 1))
            loss = 2.0 * losses["consistency"] + losses["reward"] + losses["q"] + losses["bc"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), 10.0)
            opt.step()
            sched.step()
            if progress and (step % 200 == 0 or step == n_updates - 1):
                parts = "  ".join(f"{k} {v.item():.4f}" for k, v in losses.items())
                print(f"step {step:5d}  {parts}  {time.perf_counter() - start:.1f}s")
            if time.perf_counter() - start > seconds:
                break
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        for head, scale in ((agent.reward, _REWARD_SCALE), (agent.q, _RETURN_SCALE)):
            head.net[-1].weight.mul_(scale)
            head.net[-1].bias.mul_(scale)
    return agent.eval()
