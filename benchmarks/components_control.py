"""Component-aware vs plain coupling on a multi-component control agent (Pendulum-v1).

    python benchmarks/components_control.py [--train-seconds 120] [--targets 0.2,0.3,0.4,0.5]

Trains the TD-MPC-style agent of onnxprune.zoo.control (encoder, latent dynamics, reward,
policy, Q), then prunes it to the same parameter reductions three ways and measures the
closed-loop return of the ONNX model in the environment (policy mode, and the latent planner):

- plain: one component, groups coupled across the whole agent (a dependency graph);
- components: components from name scopes, the flows between them frozen (the interface z
  between the encoder and the heads stays intact), uniform L2 inside each component;
- components + policy/plan return: the same partition, per-group cuts chosen by sensitivity
  of the closed-loop return itself as the application metric (onnxprune.zoo.control's
  policy_return: the policy head alone; plan_return: the planner over dynamics, reward, Q).

Runs for 20-30 minutes on 2 CPU cores (the plan-return search plays about 2 episodes per
candidate).

Needs torch and gymnasium (the dev extra). Results: benchmarks/results/components_control.*
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onnxprune.api import analyze, prune
from onnxprune.zoo.control import closed_loop_return, export_agent, random_policy_return
from onnxprune.zoo.control_train import train_agent

RESULTS = Path(__file__).parent / "results"
CONFIGS = {
    "plain": {"components": "none"},
    "components": {"components": "auto", "flow_policy": "freeze"},
    "components + policy return": {"components": "auto", "flow_policy": "freeze",
                                   "strategy": "sensitivity",
                                   "metric": "onnxprune.zoo.control:policy_return"},
    "components + plan return": {"components": "auto", "flow_policy": "freeze",
                                 "strategy": "sensitivity",
                                 "metric": "onnxprune.zoo.control:plan_return"},
}


def returns(model, episodes: int, plan_episodes: int) -> tuple[float, float | str]:
    policy = closed_loop_return(model, episodes=episodes)
    try:
        plan = closed_loop_return(model, episodes=plan_episodes, mode="plan")
    except ValueError:
        plan = "breaks"  # next_latent and the encoder output no longer have the same width
    return policy, plan


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-seconds", type=float, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", default="0.2,0.3,0.4,0.5")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--plan-episodes", type=int, default=5)
    args = ap.parse_args()
    console = Console(width=140)
    targets = [float(t) for t in args.targets.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "agent.onnx"
        t0 = time.time()
        export_agent(train_agent(args.train_seconds, seed=args.seed), path)
        console.log(f"trained in {time.time() - t0:.0f} s")
        base = returns(path, args.episodes, args.plan_episodes)
        groups = {}
        for name, cfg in (("plain", CONFIGS["plain"]), ("components", CONFIGS["components"])):
            a = analyze(path, components=cfg["components"], flow_policy=cfg.get("flow_policy", "own"))
            s = a.stats
            groups[name] = {"groups": s.groups, "prunable": s.prunable,
                            "largest_layers": s.largest_layers, "mean_layers": s.mean_layers,
                            "largest_params": s.largest_params, "mean_params": s.mean_params}
        rows = []
        for target in targets:
            for name, cfg in CONFIGS.items():
                t1 = time.time()
                r = prune(path, target_params=target, **{"strategy": "uniform", **cfg})
                policy, plan = returns(r.model, args.episodes, args.plan_episodes)
                rows.append({"config": name, "target": target,
                             "params_reduction": 1 - r.params_after / r.params_before,
                             "policy_return": policy, "plan_return": plan,
                             "seconds": time.time() - t1})
                console.log(rows[-1])
    table = Table(title=f"Pendulum agent: closed-loop return (mean of {args.episodes} episodes; "
                        f"plan: {args.plan_episodes}); unpruned policy {base[0]:.0f}, "
                        f"plan {base[1]:.0f}, random {random_policy_return(args.episodes):.0f}")
    for col in ("params removed", *CONFIGS):
        table.add_column(col, justify="right")
    for target in targets:
        cells = []
        for name in CONFIGS:
            row = next(r for r in rows if r["config"] == name and r["target"] == target)
            plan = row["plan_return"] if isinstance(row["plan_return"], str) else f"{row['plan_return']:.0f}"
            cells.append(f"{row['policy_return']:.0f} / {plan} ({row['params_reduction']:.0%})")
        table.add_row(f"{target:.0%}", *cells)
    console.print(table)
    console.print("cells: policy return / plan return (actual parameter reduction)")
    console.print(f"groups: {groups}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "components_control.json"
    out.write_text(json.dumps({"args": vars(args), "unpruned": {"policy": base[0], "plan": base[1]},
                               "groups": groups, "rows": rows}, indent=2))
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
