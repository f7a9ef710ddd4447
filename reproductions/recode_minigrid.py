"""RECODE's intrinsic reward against NGU's, and R2D2, on NGU's hard-exploration task
(`rillet reproduce recode-minigrid`). Results: docs/RESULTS.md, "RECODE".

A controlled comparison: all three share NGU's MiniGrid setting (`ngu_minigrid`: DoorKey-6x6, MLP 64 ->
LSTM 64, prioritized sequence replay, 16 environments, the budget). "RECODE" is NGU with only the
intrinsic reward changed: the actors score observations with the cluster memory (never reset; 50,000
atoms, count decay 0.999) over CASM's embedding, in place of the per-episode k-NN memory times RND's
multiplier over the inverse-dynamics embedding. (`rillet train-online recode` hosts the same reward on
MEME, the paper's host; here the host is NGU so that the reward is the only difference.) Besides the
greedy return, the actors' lifelong coverage (distinct observations over all of training) is the
measure where a long-term count should beat a per-episode one.
"""

from __future__ import annotations

import dataclasses
import os

from rillet.pipelines.metrics import read_jsonl
from rillet.reproductions.common import compare_curves, train_and_read_curve, write_json
from rillet.reproductions.ngu_minigrid import ENV, NGU_MINIGRID, actor_statistics, minigrid_run

RECODE_MINIGRID = dataclasses.replace(NGU_MINIGRID, novelty="recode", embedding_model="casm")
AGENTS = {"r2d2": ("r2d2", None), "ngu": ("ngu", NGU_MINIGRID), "recode": ("ngu", RECODE_MINIGRID)}
COVERAGE_STATS = ("actor/episode_intrinsic_return", "actor/episode_distinct_observations",
                  "actor/distinct_observations_total", "actor/episode_return")


def recode_run(agent: str, seed: int, total_env_steps: int, run_dir: str):
    """The OnlineConfig of one run: agent "r2d2", "ngu" or "recode" (NGU with RECODE's reward)."""
    name, learner = AGENTS[agent]
    return minigrid_run(name, seed, total_env_steps, run_dir, learner)


def coverage(run_dir: str) -> dict:
    """The run's lifelong coverage: distinct observations over all of training (the last logged count)
    and at each third of the run, from its metrics.jsonl."""
    rows = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if "actor/distinct_observations_total" in r]
    if not rows:
        return {"distinct_observations_total": None}
    thirds = [rows[min(len(rows) - 1, (k * len(rows)) // 3)] for k in (1, 2)]
    return {"distinct_observations_total": int(rows[-1]["actor/distinct_observations_total"]),
            "at_thirds": [int(r["actor/distinct_observations_total"]) for r in thirds] + [
                int(rows[-1]["actor/distinct_observations_total"])]}


def recode_minigrid(out: str = "runs/recode-minigrid", total_env_steps: int = 300_000,
                    seeds: tuple[int, ...] = (0, 1, 2), agents: tuple[str, ...] = ("r2d2", "ngu", "recode")) -> dict:
    """R2D2, NGU and NGU with RECODE's reward on DoorKey-6x6 at one budget, per seed (one after the other
    here). Writes the greedy curves (<out>/recode_minigrid.png, .json), the actors' statistics with
    lifelong coverage (<out>/recode_minigrid_actors.png) and <out>/recode_coverage.json.

    Args:
        out: the folder of the runs and figures.
        total_env_steps: the env-step budget of each run.
        seeds: one run per agent and seed.
        agents: which of "r2d2", "ngu", "recode" to run.
    """
    runs, dirs = {}, {}
    for seed in seeds:
        for agent in agents:
            label = f"{agent.upper()} seed {seed}"
            dirs[label] = os.path.join(out, f"{agent}-s{seed}")
            runs[label] = train_and_read_curve(recode_run(agent, seed, total_env_steps, dirs[label]))
    print("figure:", actor_statistics(dirs, os.path.join(out, "recode_minigrid_actors.png"), stats=COVERAGE_STATS))
    table = {label: coverage(d) for label, d in dirs.items()}
    write_json(os.path.join(out, "recode_coverage.json"), table)
    for label, row in table.items():
        print(f"{label:>16}: distinct observations over training {row['distinct_observations_total']}")
    return compare_curves(out, "recode_minigrid", runs, f"R2D2, NGU and RECODE's reward on {ENV}", target=None)
