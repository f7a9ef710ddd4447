"""MEME against Agent57 on NGU's hard-exploration MiniGrid task (`rillet reproduce meme-minigrid`), an
ablation of MEME's parts at the same budget, and the policy churn with and without the distillation
head. Same network sizes, novelty settings, replay, budget and seeds as the Agent57 runs
(`reproductions/agent57_minigrid.py`); MEME keeps its own defaults (N = 16, gamma in [0.97, 0.9997],
soft Watkins Q(lambda), trust region, TD normalisation, distillation head; the MLP torso of the
Agent57 runs, not NFNet's: see MEME_MINIGRID). Every run
measures churn (`measure_churn`: a metric only; it does not change the updates). Results:
docs/RESULTS.md, "MEME".
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from rillet.learners.meme import MEMEConfig
from rillet.pipelines.metrics import read_jsonl
from rillet.reproductions.agent57_minigrid import AGENT57_MINIGRID, agent57_run
from rillet.reproductions.common import (compare_curves, pyplot, read_curve, save_figure, train_and_read_curve,
                                         write_json)
from rillet.reproductions.ngu_minigrid import _CORE, ENV, actor_statistics

# The comparison's MEME keeps Agent57's MLP torso (the same network), so that it measures MEME's learning
# parts. An NFNet-torso row (`torso="nfnet"`, which the novelty networks then share) ran ~2.5x slower
# than the others on the shared cores and was stopped; on MiniGrid's 244-entry vectors, whose mission
# codes reach ~120, its features also start at std ~39 against the MLP's ~10.
MEME_MINIGRID = MEMEConfig(**{**_CORE, "estimator": "soft_watkins"}, novelty_hidden_sizes=(64,), memory_capacity=2000,
                           novelty_sync_period=360, measure_churn=True, torso="mlp")
# Actors sampling from the distillation head's softmax instead of acting on its argmax (the ablation
# rows act so: they were run before the argmax default was chosen).
SAMPLING = dataclasses.replace(MEME_MINIGRID, distillation_acting="sample")
SETTINGS = {
    "Agent57": ("agent57", dataclasses.replace(AGENT57_MINIGRID, measure_churn=True)),
    "MEME": ("meme", MEME_MINIGRID),
    "MEME sampling": ("meme", SAMPLING),
    "MEME sampling no trust region": ("meme", dataclasses.replace(SAMPLING, trust_region=False)),
    "MEME sampling no normalisation": ("meme", dataclasses.replace(SAMPLING, normalise_td=False)),
    "MEME no distillation": ("meme", dataclasses.replace(MEME_MINIGRID, distillation=False)),
    "MEME no trust region": ("meme", dataclasses.replace(MEME_MINIGRID, trust_region=False)),
    "MEME no normalisation": ("meme", dataclasses.replace(MEME_MINIGRID, normalise_td=False)),
}
COMPARED = ("Agent57", "MEME", "MEME sampling")  # over every seed; the ablations over the first seed only


def run_dir(out: str, setting: str, seed: int) -> str:
    return os.path.join(out, f"{setting.lower().replace(' ', '-')}-s{seed}")


def meme_run(out: str, setting: str, seed: int, total_env_steps: int) -> dict:
    """Trains (or resumes) one run of SETTINGS[setting]; returns train_and_read_curve's dict. A finished
    run (its summary.json written) is read, not evaluated again."""
    agent, learner = SETTINGS[setting]
    directory = run_dir(out, setting, seed)
    if os.path.exists(os.path.join(directory, "summary.json")):
        with open(os.path.join(directory, "summary.json")) as f:
            return {"summary": json.load(f), "curve": read_curve(directory)}
    return train_and_read_curve(agent57_run(learner, seed, total_env_steps, directory, agent=agent))


def _mean(rows: list[dict], key: str, first: float = 0.0) -> float | None:
    """Mean of key over the rows having it, from the `first` share of them on (None if none has it)."""
    values = [r[key] for r in rows if key in r]
    values = values[int(first * len(values)):]
    return float(np.mean(values)) if values else None


def run_summary(directory: str) -> dict:
    """Final and mean (area under the curve per eval) greedy return, the actors' mean episode return
    (all windows: the area under the training curve; and the last third), and the mean churn of the
    acting policy and of argmax Q over the last two thirds of the learner's logs."""
    curve = [y for _, y in read_curve(directory)]
    rows = read_jsonl(os.path.join(directory, "metrics.jsonl"))
    return {"final_eval": curve[-1], "eval_auc": float(np.mean(curve)),
            "episode_return_auc": _mean(rows, "actor/episode_return"),
            "episode_return_last_third": _mean(rows, "actor/episode_return", 2 / 3),
            "distinct_obs_last_third": _mean(rows, "actor/episode_distinct_observations", 2 / 3),
            "policy_churn": _mean(rows, "learner/policy_churn", 1 / 3), "q_churn": _mean(rows, "learner/q_churn", 1 / 3)}


def churn_figure(dirs: dict[str, str], path: str, smooth: int = 9) -> str:
    """The acting policy's churn per update over env steps (moving average over `smooth` logs), per run."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, directory in dirs.items():
        rows = [r for r in read_jsonl(os.path.join(directory, "metrics.jsonl")) if "learner/policy_churn" in r]
        k = max(1, min(smooth, len(rows)))
        values = np.convolve([r["learner/policy_churn"] for r in rows], np.ones(k) / k, mode="valid")
        ax.plot([r["step"] for r in rows][len(rows) - len(values):], values, label=label, linewidth=0.9)
    ax.set(xlabel="env steps", ylabel="share of states whose greedy action changed", title="policy churn per update")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def meme_minigrid(out: str = "runs/meme-minigrid", total_env_steps: int = 300_000, seeds: tuple[int, ...] = (0, 1, 2),
                  only: str = "") -> dict:
    """MEME and Agent57 per seed, each ablation at the first seed (one run after the other here;
    docs/RESULTS.md says how the reported runs were run); then the table (<out>/meme_summary.json), the
    greedy-eval curves (<out>/meme_minigrid.png), the actors' statistics (<out>/meme_actors.png) and the
    churn (<out>/meme_churn.png).

    Args:
        out: the folder of the runs and figures.
        total_env_steps: the env-step budget of each run.
        seeds: the seeds of the MEME / Agent57 comparison; the ablations run seeds[0].
        only: "SETTING:SEED" trains that one run and stops (to run them as separate processes).
    """
    if only:
        setting, seed = only.rsplit(":", 1)
        return meme_run(out, setting, int(seed), total_env_steps)["summary"]
    plan = [(s, seed) for seed in seeds for s in COMPARED] + [(s, seeds[0]) for s in SETTINGS if s not in COMPARED]
    runs = {f"{s} seed {seed}": meme_run(out, s, seed, total_env_steps) for s, seed in plan}
    dirs = {f"{s} seed {seed}": run_dir(out, s, seed) for s, seed in plan}
    table = {label: run_summary(directory) for label, directory in dirs.items()}
    write_json(os.path.join(out, "meme_summary.json"), table)
    for label, row in table.items():
        print(f"{label:>32}: " + "  ".join(f"{k} {v:.4g}" if v is not None else f"{k} -" for k, v in row.items()))
    print("figure:", actor_statistics(dirs, os.path.join(out, "meme_actors.png"), baseline=("Agent57",)))
    churn = {label: d for label, d in dirs.items() if label.endswith(f"seed {seeds[0]}")}
    print("figure:", churn_figure(churn, os.path.join(out, "meme_churn.png")))
    compared = {label: runs[label] for label in runs if label.rsplit(" seed", 1)[0] in COMPARED}
    compare_curves(out, "meme_minigrid", compared, f"MEME vs Agent57 on {ENV}", target=None)
    return table
