"""Epsilon-greedy DQN on Deep Sea with and without a small demonstration dataset mixed into its replay
(`rillet reproduce deep-sea-demos`). Results: docs/RESULTS.md, "Datasets for every agent".

Deep Sea (bsuite, size N) rewards only the episode that moves right at every step, so epsilon-greedy DQN
almost never sees a reward (`rillet reproduce deep-sea`: not once in 2,000 episodes at N = 10). The
demonstrations: bootstrapped DQN (`DEEP_SEA_AGENTS["bootdqn"]`, which solves N = 10) is trained on a
seed no comparison run uses, and `rillet dataset generate --policy checkpoint:RUN` records a few greedy
episodes of it. Then DQN (`deep_sea.deep_sea_config`, the same settings as the deep-sea reproduction)
runs with `--replay.demonstrations DEMOS --replay.demo-fraction DEMO_FRACTION` and without, the same
episodes and seeds, scored by bsuite's Deep Sea analysis. DEMO_FRACTION and the number of demonstration
episodes were fixed before any run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

from rillet.errors import ConfigError
from rillet.reproductions.common import read_curve, write_json
from rillet.reproductions.deep_sea import TREASURE_RETURN, bsuite_id, bsuite_solutions, deep_sea_config, \
    episode_table, plot_deep_sea

DEMO_FRACTION = 0.25  # of every batch of 128: 32 rows from the demonstrations
EXPERT_SEED = 100


def expert_demonstrations(out: str, size: int = 10, train_episodes: int = 1000, episodes: int = 5) -> str:
    """Trains bootstrapped DQN on Deep Sea `size` (seed EXPERT_SEED; <out>/expert) and records `episodes`
    greedy episodes of it as an RLDS dataset <out>/demos; ConfigError if they are not treasure episodes."""
    from rillet.pipelines.dataset_cli import generate
    from rillet.pipelines.online import train_online

    expert, demos = os.path.join(out, "expert"), os.path.join(out, "demos")
    if not os.path.exists(os.path.join(expert, "summary.json")):
        train_online(deep_sea_config("bootdqn", size, EXPERT_SEED, train_episodes, expert))
    if not os.path.exists(os.path.join(demos, "rillet_card.json")):
        generate(bsuite_id(size), demos, policy=f"checkpoint:{expert}", episodes=episodes, num_envs=1,
                 seed=EXPERT_SEED, progress=False)
    with open(os.path.join(demos, "rillet_card.json")) as f:
        mean_return = json.load(f)["return_mean"]
    if mean_return < TREASURE_RETURN:
        raise ConfigError(f"the expert's episodes in {demos} return {mean_return:.2f} on average, not the "
                          f"treasure; train it longer (train_episodes > {train_episodes}).")
    return demos


def deep_sea_demos(out: str = "runs/deep-sea-demos", size: int = 10, seeds: Sequence[int] = (0, 1, 2),
                   episodes: int = 500, demo_episodes: int = 5) -> dict:
    """DQN with and without the expert's `demo_episodes` episodes, `episodes` episodes per run and seed:
    <out>/deep_sea_demos.json and .png (finished runs are skipped).

    Args:
        out: the folder of the expert, the demonstrations, the runs, the table and the figure.
        size: the Deep Sea size (bsuite's sweep: 10, 12, ..., 50).
        seeds: one pair of runs per seed.
        episodes: the episodes of every run.
        demo_episodes: how many greedy episodes of the expert the dataset holds.
    """
    from rillet.pipelines.online import train_online

    demos = expert_demonstrations(out, size, episodes=demo_episodes)
    tables, greedy = {}, {}
    for name, sources in (("dqn", ()), ("dqn+demos", (demos,))):
        for seed in seeds:
            run_dir = os.path.join(out, f"{name}-s{seed}")
            config = deep_sea_config("dqn", size, seed, episodes, run_dir)
            replay = dataclasses.replace(config.replay, demonstrations=sources,
                                         demo_fraction=DEMO_FRACTION if sources else 0.0)
            if not os.path.exists(os.path.join(run_dir, "summary.json")):
                train_online(dataclasses.replace(config, replay=replay))
            tables[(name, size, seed)] = episode_table(run_dir, size, episodes)
            greedy[(name, size, seed)] = read_curve(run_dir)[-1][1]
    rows = [{**r, "greedy_return": greedy[(r["agent"], r["size"], r["seed"])]}
            for r in bsuite_solutions(tables, episodes)]
    for r in rows:
        print(f"{r['agent']:>9} seed {r['seed']}: treasure in {r['treasure_episodes']} of {r['episodes']} episodes, "
              f"{'solved' if r['solved'] else 'not solved'} (bsuite) at episode {r['episode']}; final greedy "
              f"return {r['greedy_return']}")
    png = plot_deep_sea(tables, rows, os.path.join(out, "deep_sea_demos.png"))
    write_json(os.path.join(out, "deep_sea_demos.json"), {"size": size, "episodes": episodes, "demos": demos,
                                                         "demo_fraction": DEMO_FRACTION, "runs": rows})
    print(f"figure: {png}")
    return {"runs": rows, "figure": png}
