"""Behaviour transfer on MiniGrid (`rillet reproduce transfer-minigrid`; Campos et al., ICML 2021, PAPERS.md).
Results: docs/RESULTS.md, "Behaviour transfer (issue 19)".

1. Pre-train NGU reward-free (`--ngu.reward-free`: intrinsic reward only) on a layout (default
   MiniGrid-Empty-8x8); its transferred policy is the most exploratory member j = N - 1.
2. Downstream, NGU with the extrinsic reward at one budget per seed, in five settings: from scratch,
   fine-tuning only (`--transfer.mode none --transfer.finetune`), the exploration option only (flights,
   `explore`), the exploitation candidate only (`exploit`), and both. All share NGU_MINIGRID's network,
   replay and actors (`ngu_minigrid.minigrid_run`); only --transfer differs.
3. The aligned task is the pre-training layout with its reward (reach the goal square); the misaligned
   task is another layout whose goal the pre-trained behaviour never sought (default MiniGrid-DistShift1:
   a goal beside a lava strip), where only the exploration use is expected to help.

One figure: the mean greedy return (j = 0) over seeds against env steps, a panel per task, a line per
setting (± one standard error shaded); a JSON table of the final and mean-over-evaluations returns and
the actors' logged flight and candidate fractions.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from rillet.pipelines.config import OnlineConfig
from rillet.pipelines.metrics import read_jsonl
from rillet.pipelines.transfer import TransferConfig
from rillet.reproductions.common import pyplot, save_figure, train_and_read_curve, write_json
from rillet.reproductions.ngu_minigrid import NGU_MINIGRID, minigrid_run

PRETRAIN_ENV = "MiniGrid-Empty-8x8-v0"
TASKS = {"aligned": "MiniGrid-Empty-8x8-v0", "misaligned": "MiniGrid-DistShift1-v0"}
REWARD_FREE = dataclasses.replace(NGU_MINIGRID, reward_free=True, eval_policy_index=NGU_MINIGRID.num_policies - 1)
SETTINGS = {"scratch": None, "finetune": ("none", True), "explore": ("explore", False),
            "exploit": ("exploit", False), "both": ("both", False)}
FLIGHT_MEAN_LENGTH = 10.0  # a placeholder: the paper's flight lengths are not recorded in PAPERS.md


def pretrain_run(seed: int, total_env_steps: int, run_dir: str, env_id: str = PRETRAIN_ENV) -> OnlineConfig:
    """The reward-free NGU pre-training run."""
    config = minigrid_run("ngu", seed, total_env_steps, run_dir, REWARD_FREE)
    return dataclasses.replace(config, env_id=env_id, eval_every_steps=max(total_env_steps // 4, 1))


def downstream_run(setting: str, task: str, seed: int, total_env_steps: int, run_dir: str,
                   checkpoint: str) -> OnlineConfig:
    """One downstream NGU run of `setting` (a SETTINGS key) on the environment `task`."""
    config = minigrid_run("ngu", seed, total_env_steps, run_dir, NGU_MINIGRID)
    config = dataclasses.replace(config, env_id=task, eval_every_steps=max(total_env_steps // 5, 1))
    if SETTINGS[setting] is None:
        return config
    mode, finetune = SETTINGS[setting]
    return dataclasses.replace(config, transfer=TransferConfig(checkpoint=checkpoint, mode=mode, finetune=finetune,
                                                               flight_mean_length=FLIGHT_MEAN_LENGTH))


def actor_fractions(run_dir: str) -> dict:
    """The mean of the logged actor/flight_fraction and actor/candidate_fraction over the run (None: not logged)."""
    rows = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if "actor/flight_fraction" in r]
    return {k: float(np.mean([r[f"actor/{k}"] for r in rows])) if rows else None
            for k in ("flight_fraction", "candidate_fraction")}


def summarise(curves: dict[str, list], dirs: dict[str, list]) -> dict:
    """Per setting: final and mean-over-evaluations greedy returns (mean and s.e. over seeds), per seed too."""
    table = {}
    for setting, runs in curves.items():
        final = [c[-1][1] for c in runs]
        area = [float(np.mean([y for _, y in c])) for c in runs]
        fractions = [actor_fractions(d) for d in dirs[setting]]
        table[setting] = {"final_mean": float(np.mean(final)), "final_se": _se(final), "final_per_seed": final,
                          "eval_mean_mean": float(np.mean(area)), "eval_mean_se": _se(area),
                          "eval_mean_per_seed": area, "actor_fractions": fractions}
    return table


def _se(values) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def plot(curves: dict[str, dict[str, list]], path: str, budget: int, seeds) -> str:
    """A panel per task: the mean greedy return over seeds of each setting (± s.e. shaded)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 3.8), squeeze=False)
    for ax, (task, by_setting) in zip(axes[0], curves.items()):
        for setting, runs in by_setting.items():
            steps = [x for x, _ in runs[0]]
            n = min(len(c) for c in runs)
            ys = np.array([[y for _, y in c[:n]] for c in runs])
            mean, se = ys.mean(0), ys.std(0, ddof=1) / np.sqrt(len(runs)) if len(runs) > 1 else np.zeros(n)
            ax.plot(steps[:n], mean, label=setting, linestyle="--" if setting == "scratch" else "-")
            ax.fill_between(steps[:n], mean - se, mean + se, alpha=0.15)
        ax.set_title(f"{task}: {TASKS.get(task, task)}", fontsize=9)
        ax.set_xlabel("env steps")
        ax.set_ylabel("greedy return (j = 0)")
        ax.legend(fontsize=7)
    fig.suptitle(f"NGU downstream after reward-free pre-training on {PRETRAIN_ENV}; {budget} steps, seeds "
                 f"{list(seeds)}", fontsize=9)
    return save_figure(fig, path)


def transfer_minigrid(out: str = "runs/transfer-minigrid", pretrain_env_steps: int = 100_000,
                      total_env_steps: int = 50_000, seeds: tuple[int, ...] = (0, 1, 2),
                      settings: tuple[str, ...] = tuple(SETTINGS),
                      misaligned_settings: tuple[str, ...] = ("scratch", "explore", "both")) -> dict:
    """Pre-trains once (seed 0), then runs each downstream setting per seed, one run after the other.
    Writes <out>/transfer_minigrid.png and <out>/transfer_minigrid.json.

    Args:
        out: the folder of the runs and figures.
        pretrain_env_steps: the reward-free pre-training budget.
        total_env_steps: each downstream run's budget.
        seeds: one downstream run per setting and seed.
        settings: the aligned task's settings (of scratch, finetune, explore, exploit, both).
        misaligned_settings: the misaligned task's settings (empty: skip it).
    """
    pre = pretrain_run(0, pretrain_env_steps, os.path.join(out, "pretrain"))
    train_and_read_curve(pre)
    plan = {"aligned": settings, "misaligned": misaligned_settings}
    curves: dict[str, dict[str, list]] = {}
    dirs: dict[str, dict[str, list]] = {}
    for task, chosen in plan.items():
        for setting in chosen:
            for seed in seeds:
                run_dir = os.path.join(out, f"{task}-{setting}-s{seed}")
                config = downstream_run(setting, TASKS[task], seed, total_env_steps, run_dir, pre.run_dir)
                result = train_and_read_curve(config)
                curves.setdefault(task, {}).setdefault(setting, []).append(result["curve"])
                dirs.setdefault(task, {}).setdefault(setting, []).append(run_dir)
                print(f"{task} {setting} seed {seed}: final greedy return {result['curve'][-1][1]:.3f}", flush=True)
    table = {task: summarise(curves[task], dirs[task]) for task in curves}
    table["setup"] = {"pretrain_env": PRETRAIN_ENV, "pretrain_env_steps": pretrain_env_steps, "tasks": TASKS,
                      "total_env_steps": total_env_steps, "seeds": list(seeds)}
    write_json(os.path.join(out, "transfer_minigrid.json"), table)
    print("figure:", plot(curves, os.path.join(out, "transfer_minigrid.png"), total_env_steps, seeds))
    return table
