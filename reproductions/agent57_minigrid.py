"""Agent57 on NGU's hard-exploration MiniGrid task (`rillet reproduce agent57-minigrid`): the bandit
meta-controller against a fixed uniform assignment of j (the ablation), same network, replay, budget and
seeds as NGU's runs (`reproductions/ngu_minigrid.py`); and a plot of the arms the bandits pull over
training. Results: docs/RESULTS.md, "Agent57".
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from rillet.learners.agent57 import Agent57Config
from rillet.pipelines.config import ActorConfig, OnlineConfig
from rillet.pipelines.metrics import read_jsonl
from rillet.reproductions.common import compare_curves, pyplot, save_figure, train_and_read_curve
from rillet.reproductions.ngu_minigrid import _CORE, ENV, MINIGRID_REPLAY, actor_statistics

# NGU_MINIGRID's network, novelty and replay settings; N = 10, the smallest family Agent57's ladder has.
AGENT57_MINIGRID = Agent57Config(**_CORE, novelty_hidden_sizes=(64,), num_policies=10, memory_capacity=2000,
                                 novelty_sync_period=360)
UNIFORM_J = dataclasses.replace(AGENT57_MINIGRID, meta_controller=False)


def agent57_run(learner: Agent57Config, seed: int, total_env_steps: int, run_dir: str,
                agent: str = "agent57") -> OnlineConfig:
    """One run of `agent` (Agent57 or an agent of its record, e.g. MEME): 16 environments, 10 greedy
    episodes every 25k steps (the bandits' best arm, or j = 0)."""
    return OnlineConfig(agent=agent, env_id=ENV, learner=learner, replay=MINIGRID_REPLAY, seed=seed,
                        total_env_steps=total_env_steps, actor=ActorConfig(num_envs=16), eval_every_steps=25_000,
                        eval_episodes=10, progress=False, run_dir=run_dir, checkpoint_every_updates=2000)


def arm_pulls(run_dirs: dict[str, str], path: str, num_arms: int) -> str:
    """One panel per run: the share of episodes played as each arm j per log window, stacked."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(run_dirs), figsize=(4.5 * len(run_dirs), 3.2), squeeze=False)
    for ax, (label, run_dir) in zip(axes[0], run_dirs.items()):
        rows = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if "actor/episodes" in r]
        counts = np.array([[r.get(f"actor/episodes_j{j}", 0.0) for j in range(num_arms)] for r in rows])
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
        ax.stackplot([r["step"] for r in rows], share.T, labels=[f"j={j}" for j in range(num_arms)])
        ax.set(title=label, xlabel="env steps", ylabel="share of episodes", ylim=(0, 1))
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, path)


def agent57_minigrid(out: str = "runs/agent57-minigrid", total_env_steps: int = 300_000,
                     seeds: tuple[int, ...] = (0, 1, 2)) -> dict:
    """Agent57 with its bandits and with a fixed uniform j on DoorKey-6x6, per seed (one after the other
    here; docs/RESULTS.md says how the reported runs were run). Writes the greedy-eval curves
    (<out>/agent57_minigrid.png, .json) and the bandits' arm pulls (<out>/agent57_arms.png).

    Args:
        out: the folder of the runs and figures.
        total_env_steps: the env-step budget of each run.
        seeds: one pair of runs (bandit, uniform j) per seed.
    """
    runs, bandit_dirs = {}, {}
    for seed in seeds:
        for name, learner in (("bandit", AGENT57_MINIGRID), ("uniform-j", UNIFORM_J)):
            run_dir = os.path.join(out, f"{name}-s{seed}")
            runs[f"Agent57 {name} seed {seed}"] = train_and_read_curve(agent57_run(learner, seed, total_env_steps,
                                                                                   run_dir))
            if name == "bandit":
                bandit_dirs[f"seed {seed}"] = run_dir
    print("figure:", arm_pulls(bandit_dirs, os.path.join(out, "agent57_arms.png"), AGENT57_MINIGRID.num_policies))
    dirs = {label.replace("Agent57 ", ""): os.path.join(out, label.split()[1] + "-s" + label.split()[-1])
            for label in runs}
    print("figure:", actor_statistics(dirs, os.path.join(out, "agent57_actors.png"), baseline=("uniform",)))
    return compare_curves(out, "agent57_minigrid", runs, f"Agent57: bandit vs uniform j on {ENV}", target=None)
