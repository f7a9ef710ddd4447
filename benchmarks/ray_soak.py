"""Soak: 8 actor processes writing through Ray for 5 minutes, then the replay table's own counters.

    .venv/bin/python benchmarks/ray_soak.py [--num-actors 8 --act-for-s 300]

One `rillet launch dqn` on CartPole-v1 (2 envs per actor process, a 20,000-item FIFO table) that acts
for --act-for-s seconds. Checks, from Reverb's counters read at the end: stored = min(inserted,
max_size), i.e. every item inserted is either stored or was removed by the FIFO remover (removed =
inserted - stored, and no more than the table had to evict); no process restarted (an actor error
would show as a restart); the learner sampled. Prints the counters and exit code 1 if a check failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from rillet.learners.dqn import DQNConfig
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.launch import RayConfig, launch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-actors", type=int, default=8)
    parser.add_argument("--act-for-s", type=float, default=300.0)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    config = OnlineConfig(agent="dqn", env_id="CartPole-v1", total_env_steps=10**9, eval_episodes=3, progress=False,
                          learner=DQNConfig(hidden_sizes=(64, 64)), checkpoint_every_updates=5_000,
                          replay=ReplayConfig(max_size=20_000, min_size_to_sample=500, batch_size=64,
                                              samples_per_insert=4.0),
                          actor=ActorConfig(num_envs=2), run_dir=args.out or tempfile.mkdtemp(prefix="ray-soak-"))
    summary = launch(config, RayConfig(num_actors=args.num_actors, act_for_s=args.act_for_s, eval_every_s=0,
                                       actor_cpus=0.2, replay_checkpoint_every_s=600))
    table = summary["replay_table"]
    removed = table["inserted"] - table["size"]
    checks = {"stored = min(inserted, max_size)": table["size"] == min(table["inserted"], table["max_size"]),
              "removed >= 0": removed >= 0, "no restarts": not any(summary["restarts"].values()),
              "learner sampled": table["sampled"] > 0 and summary["updates"] > 0}
    print(f"{args.num_actors} actor processes for {args.act_for_s:.0f} s: {summary['env_steps_actors']} env steps, "
          f"table inserted {table['inserted']} = stored {table['size']} + removed {removed} (max_size "
          f"{table['max_size']}), sampled {table['sampled']}, learner updates {summary['updates']}, restarts "
          f"{summary['restarts']}, launch {summary['wall_s_launch']} s")
    for name, ok in checks.items():
        print(f"{'ok' if ok else 'FAILED'}: {name}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
