"""TD3's critic targets compared on DM Control tasks (`rillet reproduce td3-estimators`): n-step, Peng's
Q(lambda), Retrace and tree-backup (Kozuno et al., 2021, plugged into TD3), the same budget and seeds for
each. Writes, per task, a figure of the mean and standard error of the greedy-evaluation curves over
the seeds, and one table of final and area-under-curve returns (mean and standard error over seeds).

Runs resume from their directories (<out>/<task>/<estimator>/seed-<k>), so an interrupted sweep picks
up where it stopped and a finished one only re-reads its curves.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from rillet.learners.agents import get_agent
from rillet.learners.continuous_targets import CONTINUOUS_ESTIMATORS, check_continuous_estimator
from rillet.learners.td3 import TD3Config
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.reproductions.common import pyplot, save_figure, train_and_read_curve, write_json

# TD3's paper values (learners/td3.py) with 5k warm-up steps, and the td3 record's replay options (64
# sequences of 5 transitions per update, about one update per env step): this library's choice for
# budgets of 100k-500k env steps.
TD3_DMC = TD3Config(trace_length=5, n_step=5, lambda_=0.9, warmup_steps=5_000)


def td3_config(task: str, estimator: str, seed: int, total_env_steps: int, run_dir: str, eval_every_steps: int,
               eval_episodes: int, learner: TD3Config = TD3_DMC, num_envs: int = 1) -> OnlineConfig:
    """The online run of one (task, estimator, seed)."""
    learner = dataclasses.replace(learner, estimator=check_continuous_estimator(estimator))
    return OnlineConfig(agent="td3", env_id=task, learner=learner, seed=seed, total_env_steps=total_env_steps,
                        eval_every_steps=eval_every_steps, eval_episodes=eval_episodes, run_dir=run_dir,
                        replay=ReplayConfig(**get_agent("td3").replay_defaults(learner)),
                        actor=ActorConfig(num_envs=num_envs),
                        checkpoint_every_updates=10_000, progress=False)


def seed_statistics(curves: Sequence[Sequence[tuple[int, float]]]) -> dict:
    """Over the seeds' curves [(env_steps, return), ...] (cut to the shortest; of two evaluations at one env
    step, the periodic one and the run's final one, the later): env_steps [E] (the
    seeds' mean at each evaluation), mean and se [E] (standard error, 0 for one seed), and per seed the
    final return and the area under the curve (trapezoids over env steps, divided by their span:
    the mean return over training) with their mean and standard error."""
    curves = [list(dict(c).items()) for c in curves]  # one evaluation per env step: the last (the run's final)
    length = min(len(c) for c in curves)
    xs = np.array([[x for x, _ in c[:length]] for c in curves], np.float64)
    ys = np.array([[y for _, y in c[:length]] for c in curves], np.float64)
    steps = xs.mean(0)
    span = max(steps[-1] - steps[0], 1.0)
    auc = np.array([np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / span if length > 1 else y[0]
                    for x, y in zip(xs, ys)])
    final = ys[:, -1]

    def se(v):
        return float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0

    return {"env_steps": steps.tolist(), "mean": ys.mean(0).tolist(), "se": [se(col) for col in ys.T],
            "final": final.tolist(), "final_mean": float(final.mean()), "final_se": se(final),
            "auc": auc.tolist(), "auc_mean": float(auc.mean()), "auc_se": se(auc), "seeds": len(curves)}


def plot_task(task: str, stats: dict, path: str, title: str) -> str:
    """One panel: per estimator the mean greedy return over seeds against env steps, +- 1 standard error."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, s in stats.items():
        x, m, e = np.array(s["env_steps"]), np.array(s["mean"]), np.array(s["se"])
        ax.plot(x, m, marker="o", markersize=3, label=f"{name} ({s['seeds']} seeds)")
        ax.fill_between(x, m - e, m + e, alpha=0.2)
    ax.set(xlabel="environment steps", ylabel="greedy return (mean ± s.e.)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def td3_estimators(out: str = "runs/td3-estimators", tasks: tuple[str, ...] = ("CheetahRun-v1", "CartpoleSwingup-v1"),
                   estimators: tuple[str, ...] = CONTINUOUS_ESTIMATORS, seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
                   total_env_steps: int = 100_000, eval_every_steps: int = 10_000, eval_episodes: int = 5,
                   num_envs: int = 1) -> dict:
    """TD3 (TD3_DMC) with each critic target on each task, every seed, the same budget.

    Args:
        out: the folder of the runs, <task>.png per task and td3-estimators.json (the table).
        tasks: EnvPool DM Control ids (continuous actions, vector observations), e.g. CheetahRun-v1.
        estimators: any of nstep, peng, retrace, tree_backup.
        seeds: the seeds of every (task, estimator).
        total_env_steps: the env-step budget of each run.
        eval_every_steps: greedy (deterministic-policy) evaluation every this many env steps.
        eval_episodes: episodes per evaluation.
        num_envs: actor environments per run (1, as TD3; more act faster per wall second).
    """
    table: dict = {}
    for task in tasks:
        stats = {}
        for estimator in estimators:
            curves = [train_and_read_curve(td3_config(
                task, estimator, seed, total_env_steps, os.path.join(out, task, estimator, f"seed-{seed}"),
                eval_every_steps, eval_episodes, num_envs=num_envs))["curve"] for seed in seeds]
            stats[estimator] = seed_statistics(curves)
        png = plot_task(task, stats, os.path.join(out, f"{task}.png"),
                        f"TD3 critic targets on {task}, {total_env_steps} env steps")
        table[task] = {"figure": png, **stats}
        for name, s in stats.items():
            print(f"{task:>20} {name:>12}: final {s['final_mean']:8.1f} ± {s['final_se']:6.1f}   "
                  f"AUC {s['auc_mean']:8.1f} ± {s['auc_se']:6.1f}   ({s['seeds']} seeds)")
    write_json(os.path.join(out, "td3-estimators.json"), table)
    return table
