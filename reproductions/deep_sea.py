"""Deep Sea (bsuite) at several sizes: epsilon-greedy DQN, bootstrapped DQN with priors and TDU, the
same number of episodes each, over seeds (`rillet reproduce deep-sea`). Scored with bsuite's own Deep
Sea analysis (`bsuite.experiments.deep_sea.analysis`: `find_solution`, its definition of solved, and
`score`, solved before 2^N + 100 episodes), from each run's episodes.jsonl. Results: docs/RESULTS.md.

A Deep Sea episode of size N finds the treasure iff every move goes right (return 1 - 0.01 = 0.99);
any other episode is one of bsuite's "bad episodes" (return <= 0), so the bad-episode count is read
from the returns. Episodes are numbered in the order they ended across the run's environments.

Settings (chosen before any run, from bsuite's baselines: MLP (50, 50), Adam 1e-3, priors scale 3,
epsilon 0.05 for DQN and 0 for the ensembles): see DEEP_SEA_AGENTS and deep_sea_config.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Sequence

import numpy as np

from rillet.errors import ConfigError
from rillet.learners.dqn import DQNConfig
from rillet.learners.tdu import TDUConfig
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.metrics import read_jsonl
from rillet.reproductions.common import pyplot, read_curve, save_figure, write_json

_NET = dict(hidden_sizes=(50, 50), learning_rate=1e-3, target_update_period=4)
# agent -> (learner config, actors' epsilon): bootdqn acts with 10 members trained on r; TDU with 10
# exploration members trained on r + beta * sigma, sigma from 10 more members trained on r.
DEEP_SEA_AGENTS = {
    "dqn": (DQNConfig(**_NET), 0.05),
    "bootdqn": (DQNConfig(**_NET, ensemble_size=10, prior_scale=3.0, bootstrap_probability=0.5,
                          ensemble_acting="member"), 0.0),
    "tdu": (TDUConfig(**_NET, ensemble_size=20, exploration_members=10, prior_scale=3.0,
                      bootstrap_probability=0.5, tdu_beta=0.01), 0.0),
}
TREASURE_RETURN = 0.5  # a treasure episode returns 0.99, any other <= 0
NUM_ENVS = 8


def bsuite_id(size: int) -> str:
    """rillet's env id of bsuite's Deep Sea of this size (bsuite's sweep: sizes 10, 12, ..., 50)."""
    if size < 10 or size > 50 or size % 2:
        raise ValueError(f"bsuite's Deep Sea sweep has sizes 10, 12, ..., 50, not {size}.")
    return f"bsuite/deep_sea/{(size - 10) // 2}"


def deep_sea_config(agent: str, size: int, seed: int, episodes: int, run_dir: str,
                    updates_per_step: float = 1.0, tdu_beta: float | None = None) -> OnlineConfig:
    """The online run of `agent` on Deep Sea `size` for at least `episodes` episodes ((episodes + 8) *
    (size + 1) env steps: an episode's N moves and the reset step after it; the analysis reads the first
    `episodes`), 8 environments, n-step 1 transitions, uniform replay of 10,000, a final greedy evaluation."""
    learner, epsilon = DEEP_SEA_AGENTS[agent]
    if tdu_beta is not None and agent == "tdu":
        learner = dataclasses.replace(learner, tdu_beta=tdu_beta)
    batch = 128
    return OnlineConfig(agent=agent, learner=learner, env_id=bsuite_id(size), seed=seed,
                        total_env_steps=(episodes + NUM_ENVS) * (size + 1), eval_every_steps=0, eval_episodes=1,
                        gamma=0.99,
                        checkpoint_every_updates=5_000, run_dir=run_dir, progress=False,
                        replay=ReplayConfig(max_size=10_000, min_size_to_sample=batch * 2, n_step=1, batch_size=batch,
                                            samples_per_insert=updates_per_step * batch),
                        actor=ActorConfig(num_envs=NUM_ENVS, epsilon_base=epsilon, epsilon_alpha=0.0))


def episode_table(run_dir: str, size: int, episodes: int) -> dict[str, np.ndarray]:
    """bsuite's logged columns from a run's first `episodes` episodes (episodes.jsonl): episode (1-based),
    total_bad_episodes, treasure [E] bool (this episode found it)."""
    returns = np.array([e["return"] for e in read_jsonl(os.path.join(run_dir, "episodes.jsonl"))][:episodes])
    treasure = returns > TREASURE_RETURN
    return {"episode": np.arange(1, len(returns) + 1), "total_bad_episodes": np.cumsum(~treasure),
            "treasure": treasure, "size": np.full(len(returns), size)}


def bsuite_solutions(tables: dict[tuple[str, int, int], dict], episodes: int) -> list[dict]:
    """One row per (agent, size, seed) from bsuite's `find_solution`: the episode at which it counts the
    run solved (or its last episode), solved, and whether it beat dithering (solved before 2^N + 100)."""
    import pandas as pd
    from bsuite.experiments.deep_sea import analysis

    rows = []
    for (agent, size, seed), table in sorted(tables.items()):
        df = pd.DataFrame({k: v for k, v in table.items() if k != "treasure"})
        with warnings.catch_warnings():  # bsuite's analysis uses Series.append (deprecated in pandas 1.5)
            warnings.simplefilter("ignore", FutureWarning)
            found = analysis.find_solution(df, merge=False, num_episodes=episodes).iloc[0]
            beat_dither = bool(analysis.score(df) > 0)
        rows.append({"agent": agent, "size": size, "seed": seed, "episode": int(found["episode"]),
                     "solved": bool(found["solved"]), "beat_dither": beat_dither,
                     "treasure_episodes": int(table["treasure"].sum()), "episodes": len(table["episode"])})
    return rows


def plot_deep_sea(tables: dict[tuple[str, int, int], dict], rows: list[dict], path: str) -> str:
    """Per size: the cumulative fraction of episodes that found the treasure (one line per run, colour
    per agent), and episodes until solved per agent (a dot per seed; unsolved at the top, hollow)."""
    plt = pyplot()
    plt.rcdefaults()  # importing bsuite's analysis switches matplotlib to its own style
    sizes, agents = sorted({k[1] for k in tables}), sorted({k[0] for k in tables})
    colours = dict(zip(agents, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, axes = plt.subplots(2, len(sizes), figsize=(4.5 * len(sizes), 7.5), dpi=100, squeeze=False)
    for col, size in enumerate(sizes):
        for (agent, s, seed), table in sorted(tables.items()):
            if s == size:
                fraction = np.cumsum(table["treasure"]) / table["episode"]
                axes[0, col].plot(table["episode"], fraction, color=colours[agent], alpha=0.8,
                                  label=agent if seed == min(k[2] for k in tables) else None)
        axes[0, col].set(title=f"Deep Sea {size}", xlabel="episode", ylabel="fraction of episodes with treasure")
        axes[0, col].legend(fontsize=8)
        for i, agent in enumerate(agents):
            for r in (r for r in rows if r["agent"] == agent and r["size"] == size):
                axes[1, col].scatter(i, r["episode"], color=colours[agent],
                                     facecolors=colours[agent] if r["solved"] else "none")
        axes[1, col].set_xticks(range(len(agents)), agents)
        axes[1, col].set(ylabel="episodes until solved", ylim=(0, 1.05 * max(r["episodes"] for r in rows)),
                         xlim=(-0.5, len(agents) - 0.5),
                         title="bsuite's solved (hollow: not solved)")
    return save_figure(fig, path)


def deep_sea(out: str = "runs/deep-sea", agents: Sequence[str] = ("dqn", "bootdqn", "tdu"),
             sizes: Sequence[int] = (10, 20, 30), seeds: Sequence[int] = (0, 1, 2), episodes: int = 1000,
             updates_per_step: float = 1.0, tdu_beta: float = 0.01, analyse_only: bool = False) -> dict:
    """Runs every (agent, size, seed) for `episodes` episodes (finished runs are skipped, cut ones resume),
    then scores them with bsuite's Deep Sea analysis: <out>/deep_sea.json and deep_sea.png.

    Args:
        out: the folder of the runs (<out>/<agent>-n<size>-s<seed>), the table and the figure.
        agents: some of "dqn", "bootdqn", "tdu" (DEEP_SEA_AGENTS).
        sizes: Deep Sea sizes (bsuite's sweep: 10, 12, ..., 50).
        seeds: one run per seed.
        episodes: the episodes of every run (the same for every agent).
        updates_per_step: learner updates per env step (replay samples per insert / batch size).
        tdu_beta: TDU's bonus scale beta.
        analyse_only: score the runs already in `out` (e.g. made by several processes) without training.
    """
    from rillet.pipelines.online import train_online

    tables, greedy = {}, {}
    for agent in agents:
        for size in sizes:
            for seed in seeds:
                run_dir = os.path.join(out, f"{agent}-n{size}-s{seed}")
                if not analyse_only and not os.path.exists(os.path.join(run_dir, "summary.json")):
                    train_online(deep_sea_config(agent, size, seed, episodes, run_dir, updates_per_step, tdu_beta))
                if os.path.exists(os.path.join(run_dir, "episodes.jsonl")):
                    tables[(agent, size, seed)] = episode_table(run_dir, size, episodes)
                    greedy[(agent, size, seed)] = read_curve(run_dir)[-1][1] if read_curve(run_dir) else None
    if not tables:
        raise ConfigError(f"no Deep Sea runs under {out!r} for agents {tuple(agents)}, sizes {tuple(sizes)}, "
                          f"seeds {tuple(seeds)}: train them first (without --analyse-only).")
    rows = [{**r, "greedy_return": greedy[(r["agent"], r["size"], r["seed"])]}
            for r in bsuite_solutions(tables, episodes)]
    for r in rows:
        print(f"{r['agent']:>8} N={r['size']:<3} seed {r['seed']}: {'solved' if r['solved'] else 'not solved':>10} "
              f"at episode {r['episode']:>5}; treasure in {r['treasure_episodes']} of {r['episodes']} episodes; "
              f"final greedy return {r['greedy_return']}")
    result = {"episodes": episodes, "runs": rows, "score": _scores(rows)}
    write_json(os.path.join(out, "deep_sea.json"), result)
    print(json.dumps(result["score"], indent=1))
    print(f"figure: {plot_deep_sea(tables, rows, os.path.join(out, 'deep_sea.png'))}")
    return result


def _scores(rows: list[dict]) -> dict:
    """Per agent: bsuite's score (the fraction of runs that beat dithering) and the sizes solved by every
    seed."""
    out = {}
    for agent in sorted({r["agent"] for r in rows}):
        mine = [r for r in rows if r["agent"] == agent]
        sizes = sorted({r["size"] for r in mine})
        out[agent] = {"bsuite_score": float(np.mean([r["beat_dither"] for r in mine])),
                      "solved_by_every_seed": [n for n in sizes if all(r["solved"] for r in mine if r["size"] == n)]}
    return out
