"""Scaling on Ray: env steps/s and learner updates/s of `rillet launch` with 1 and with 2 actor
processes, the same agent, env, budget and options, one after the other from this process (each
launch starts and stops its own local Ray instance).

    .venv/bin/python benchmarks/ray_scaling.py [--env-id CartPole-v1 --total-env-steps 20000 --rounds 1]

The rates are counted from the moment the first actor step lands to the end of acting (launch.jsonl,
one line per second), so Ray's and the processes' start-up (tens of seconds here) is left out; the
learner's rate is its updates over that span. Prints one line per run and the 2-actor / 1-actor
ratios last. The learner's rate limit (--samples-per-insert, with its error buffer) ties the actors
to the learner.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile

from rillet.learners.dqn import DQNConfig
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.launch import RayConfig, launch


def acting_rates(run_dir: str, updates: int) -> dict:
    """env steps/s and updates/s over the acting span of a finished launch (from launch.jsonl)."""
    with open(os.path.join(run_dir, "launch.jsonl")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    acting = [r for r in lines if r["env_steps"] > 0]
    first, last = acting[0], next(r for r in acting if r["env_steps"] == acting[-1]["env_steps"])
    span = max(last["time_s"] - first["time_s"], 1e-9)
    steps = last["env_steps"] - first["env_steps"]
    return {"env_steps_per_s": steps / span, "updates_per_s": updates / span, "span_s": span,
            "env_steps": last["env_steps"]}


def one_run(base: OnlineConfig, num_actors: int, out: str) -> dict:
    config = dataclasses.replace(base, run_dir=os.path.join(out, f"actors-{num_actors}"))
    summary = launch(config, RayConfig(num_actors=num_actors, eval_every_s=0, log_every_s=1.0,
                                       replay_checkpoint_every_s=600))
    rates = acting_rates(config.run_dir, summary["updates"])
    print(f"{num_actors} actor process(es): {rates['env_steps_per_s']:.0f} env steps/s, "
          f"{rates['updates_per_s']:.1f} updates/s over {rates['span_s']:.0f} s of acting "
          f"({rates['env_steps']} env steps, {summary['updates']} updates)", flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--total-env-steps", type=int, default=20_000)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--samples-per-insert", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="ray-scaling-")
    base = OnlineConfig(agent="dqn", env_id=args.env_id, total_env_steps=args.total_env_steps,
                        learner=DQNConfig(hidden_sizes=(64, 64)), eval_episodes=3, progress=False,
                        replay=ReplayConfig(min_size_to_sample=500, batch_size=64,
                                            samples_per_insert=args.samples_per_insert),
                        actor=ActorConfig(num_envs=args.num_envs), checkpoint_every_updates=100_000)
    ratios = []
    for r in range(args.rounds):
        one = one_run(dataclasses.replace(base, seed=r), 1, os.path.join(out, f"round-{r}"))
        two = one_run(dataclasses.replace(base, seed=r), 2, os.path.join(out, f"round-{r}"))
        ratios.append((two["env_steps_per_s"] / one["env_steps_per_s"], two["updates_per_s"] / one["updates_per_s"]))
    for r, (steps, updates) in enumerate(ratios):
        print(f"round {r}: ratio 2 actors / 1 actor: env steps/s {steps:.2f}, updates/s {updates:.2f}")


if __name__ == "__main__":
    main()
