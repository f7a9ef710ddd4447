"""Offline R2D2 against behaviour cloning with the same network, from a dataset an online R2D2 run
recorded on CartPole without velocities (`rillet reproduce offline-r2d2`). Results: docs/RESULTS.md,
"Datasets for every agent".

The data: `rillet train-online r2d2 ... --record-dir DIR` with the po-cartpole preset (R2D2_CARTPOLE,
R2D2_REPLAY, the velocities hidden), which records every episode its actors finish (the Ape-X epsilon
ladder of 8 environments, from the untrained start to the solve: early and late episodes mixed, with
the actors' stored recurrent states). Both learners read the same sequences (`agent_data.agent_batches`:
burn_in + trace + 1 steps every 10 steps of each episode), have the same network (R2D2_CARTPOLE) and
the same number of updates, batch and seeds; they differ only in the loss (R2D2's n-step double Q vs
cross-entropy on the recorded actions, `learners.behaviour_cloning`). Every EVAL_EVERY updates 20
greedy episodes; the table reports the last evaluation and the best, beside the dataset's mean return.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from rillet.pipelines.metrics import read_jsonl
from rillet.reproductions.common import pyplot, save_figure, write_json
from rillet.reproductions.r2d2_cartpole import HIDE_VELOCITIES, R2D2_CARTPOLE, R2D2_REPLAY

EVAL_EVERY = 2_000
SETTINGS = {"offline R2D2": False, "behaviour cloning": True}  # name -> --behaviour-cloning


def offline_config(data: str, run_dir: str, seed: int, num_updates: int, cloning: bool):
    """The offline run of one setting and seed (see the module docstring)."""
    from rillet.pipelines.offline_agents import AgentOfflineConfig

    return AgentOfflineConfig(agent="r2d2", learner=R2D2_CARTPOLE, data=data, observation_indices=HIDE_VELOCITIES,
                              num_updates=num_updates, batch_size=R2D2_REPLAY.batch_size,
                              sequence_period=R2D2_REPLAY.sequence_period, seed=seed, eval_every_updates=EVAL_EVERY,
                              eval_episodes=20, checkpoint_every_updates=EVAL_EVERY, behaviour_cloning=cloning,
                              run_dir=run_dir)


def offline_r2d2(data: str, out: str = "runs/offline-r2d2", seeds: Sequence[int] = (0, 1, 2),
                 num_updates: int = 10_000) -> dict:
    """Both settings on `data` for each seed (finished runs are skipped): <out>/offline_r2d2.{json,png}.

    Args:
        data: an RLDS dataset recorded by `rillet train-online r2d2 --observation-indices 0 2 --record-dir`.
        out: the folder of the runs (<out>/<setting>-s<seed>), the table and the figure.
        seeds: one run per setting and seed.
        num_updates: the learner updates of every run.
    """
    from rillet.pipelines.offline_agents import train_offline_agent

    table, data_return = {}, None
    for name, cloning in SETTINGS.items():
        for seed in seeds:
            run_dir = os.path.join(out, f"{'bc' if cloning else 'r2d2'}-s{seed}")
            if not os.path.exists(os.path.join(run_dir, "summary.json")):
                train_offline_agent(offline_config(data, run_dir, seed, num_updates, cloning))
            curve = read_jsonl(os.path.join(run_dir, "curve.jsonl"))
            with open(os.path.join(run_dir, "summary.json")) as f:
                data_return = json.load(f)["data_return_mean"]
            table.setdefault(name, {})[seed] = {"curve": [(c["updates"], c["return_mean"]) for c in curve],
                                                "final": curve[-1]["return_mean"],
                                                "best": max(c["return_mean"] for c in curve)}
    summary = {name: {k: float(np.mean([r[k] for r in rows.values()])) for k in ("final", "best")}
               for name, rows in table.items()}
    for name, rows in table.items():
        print(f"{name:>18}: final " + ", ".join(f"{r['final']:.1f}" for r in rows.values())
              + f" (mean {summary[name]['final']:.1f}); best mean {summary[name]['best']:.1f}")
    print(f"the dataset's mean episode return: {data_return:.1f}")
    png = _plot(table, data_return, os.path.join(out, "offline_r2d2.png"))
    write_json(os.path.join(out, "offline_r2d2.json"), {"data": data, "num_updates": num_updates, "seeds": list(seeds),
                                                         "data_return_mean": data_return, "runs": table,
                                                         "mean": summary, "figure": png})
    return {"mean": summary, "data_return_mean": data_return, "figure": png}


def _plot(table: dict, data_return: float, path: str) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, (name, rows) in zip(colours, table.items()):
        for i, row in enumerate(rows.values()):
            x, y = zip(*row["curve"])
            ax.plot(x, y, color=colour, alpha=0.8, label=name if i == 0 else None)
    ax.axhline(data_return, color="grey", linestyle="--", label="dataset mean return")
    ax.set(xlabel="updates", ylabel="greedy return (20 episodes)", title="offline on CartPole without velocities")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
