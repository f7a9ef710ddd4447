"""NGU against R2D2 on a hard-exploration MiniGrid task (`rillet reproduce ngu-minigrid`), and NGU on
Montezuma's Revenge end to end (`rillet reproduce ngu-atari-smoke`). Results: docs/RESULTS.md, "NGU".

MiniGrid-DoorKey-6x6: the only reward comes after picking up a key, opening a door and reaching the
goal (360 steps at most), so epsilon-greedy exploration rarely sees it; small enough for one run to fit
in well under an hour of this machine. Both agents share the network (MLP 64 -> LSTM 64), the
prioritized sequence replay and the budget; NGU adds its novelty networks and policy family (N = 8).
"""

from __future__ import annotations

import os
import resource

import numpy as np

from rillet.learners.ngu import NGUConfig
from rillet.learners.r2d2 import R2D2Config
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.metrics import read_jsonl
from rillet.reproductions.common import compare_curves, pyplot, save_figure, train_and_read_curve

ENV = "MiniGrid-DoorKey-6x6-v0"
_CORE = dict(burn_in=4, trace_length=16, lstm_size=64, hidden_sizes=(64,), learning_rate=5e-4,
             target_update_period=200, estimator="retrace", lambda_=0.95, n_step=5)
R2D2_MINIGRID = R2D2Config(**_CORE, gamma=0.997)  # gamma = NGU's gamma_max, the discount of its j = 0
NGU_MINIGRID = NGUConfig(**_CORE, novelty_hidden_sizes=(64,), num_policies=8, memory_capacity=2000,
                         novelty_sync_period=360)  # one version of f per 360-step episode at most
MINIGRID_REPLAY = ReplayConfig(sequence_period=8, batch_size=16, min_size_to_sample=200, samples_per_insert=4.0,
                               sampler="prioritized", priority_exponent=0.9)
ACTOR_STATS = ("actor/episode_intrinsic_return", "actor/episode_distinct_observations", "actor/episode_return")


def minigrid_run(agent: str, seed: int, total_env_steps: int, run_dir: str, learner=None) -> OnlineConfig:
    """One run of the comparison: 16 environments, 10 greedy episodes (j = 0 for NGU) every 25k steps;
    learner: the agent's config (default NGU_MINIGRID for "ngu", else R2D2_MINIGRID)."""
    learner = learner or (NGU_MINIGRID if agent == "ngu" else R2D2_MINIGRID)
    return OnlineConfig(agent=agent, env_id=ENV, learner=learner, replay=MINIGRID_REPLAY, seed=seed,
                        total_env_steps=total_env_steps, actor=ActorConfig(num_envs=16), eval_every_steps=25_000,
                        eval_episodes=10, progress=False, run_dir=run_dir, checkpoint_every_updates=2000)


def actor_statistics(runs: dict[str, str], path: str, smooth: int = 5,
                     baseline: tuple[str, ...] = ("R2D2",), stats: tuple[str, ...] = ACTOR_STATS) -> str:
    """One figure, a panel per `stats` entry: its logged means over env steps for each run directory,
    each a moving average over `smooth` log windows; runs whose label starts with a `baseline` prefix
    are dashed."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(stats), figsize=(5 * len(stats), 3.5))
    for label, run_dir in runs.items():
        rows = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if stats[0] in r]
        window = np.ones(min(smooth, len(rows))) / min(smooth, len(rows))
        for ax, key in zip(axes, stats):
            values = np.convolve([r[key] for r in rows], window, mode="valid")
            ax.plot([r["step"] for r in rows][len(rows) - len(values):], values, label=label, linewidth=0.9,
                    linestyle="--" if label.startswith(baseline) else "-")
    for ax, key in zip(axes, stats):
        ax.set_title(key.split("/")[1].replace("_", " ") + ("" if key.endswith("_total") else " per episode"),
                     fontsize=9)
        ax.set_xlabel("env steps")
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)


def ngu_minigrid(out: str = "runs/ngu-minigrid", total_env_steps: int = 300_000,
                 seeds: tuple[int, ...] = (0, 1, 2)) -> dict:
    """R2D2 (epsilon-greedy) and NGU on DoorKey-6x6, same network, replay and budget, per seed (run one
    after the other here; docs/RESULTS.md says how the reported runs were run). Writes the greedy-eval
    curves (<out>/ngu_minigrid.png, .json) and the actors' intrinsic return, distinct observations and
    return per episode (<out>/ngu_minigrid_actors.png).

    Args:
        out: the folder of the runs and figures.
        total_env_steps: the env-step budget of each run.
        seeds: one pair of runs (R2D2, NGU) per seed.
    """
    runs, dirs = {}, {}
    for seed in seeds:
        for agent in ("r2d2", "ngu"):
            label = f"{agent.upper()} seed {seed}"
            dirs[label] = os.path.join(out, f"{agent}-s{seed}")
            runs[label] = train_and_read_curve(minigrid_run(agent, seed, total_env_steps, dirs[label]))
    print("figure:", actor_statistics(dirs, os.path.join(out, "ngu_minigrid_actors.png")))
    return compare_curves(out, "ngu_minigrid", runs, f"R2D2 vs NGU (j = 0 greedy) on {ENV}", target=None)


def ngu_atari_smoke(out: str = "runs/ngu-atari-smoke", env_id: str = "MontezumaRevenge-v5",
                    steps: tuple[int, ...] = (2000, 4000)) -> dict:
    """NGU with the paper's network (Nature conv torso, LSTM 512, memory 30,000) on an Atari game for a
    few thousand steps: trains to steps[0], resumes from its checkpoint to each later budget, and
    prints each leg's summary and the process's peak resident memory (MiB).

    Args:
        out: the run directory.
        env_id: an EnvPool Atari game.
        steps: the env-step budget of each leg (the first trains from scratch, the others resume).
    """
    learner = NGUConfig(burn_in=8, trace_length=16, num_policies=8)
    replay = ReplayConfig(sequence_period=8, batch_size=8, min_size_to_sample=16, samples_per_insert=2.0,
                          sampler="prioritized", priority_exponent=0.9, max_size=2000)
    legs = []
    for budget in steps:
        summary = train_and_read_curve(OnlineConfig(
            agent="ngu", env_id=env_id, learner=learner, replay=replay, total_env_steps=budget,
            actor=ActorConfig(num_envs=4), eval_every_steps=0, eval_episodes=1, progress=False, run_dir=out,
            checkpoint_every_updates=20))["summary"]
        legs.append({k: summary[k] for k in ("env_steps", "updates", "wall_s")})
        print(legs[-1], flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB")
    return {"legs": legs, "peak_rss_mib": peak}
