"""What the reproductions share: train an online run and read its greedy-eval curve, compare curves
in one table and figure, train an offline run, write JSON, and the figures of the offline
comparisons (bars per task, dots per seed, loss against model size). Built only from public
stages: `train_online`, `train_offline`, `evals.plots`.

`plot_runs` is itself a reproduction (`rillet reproduce plot-runs`): the figure of finished runs.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

from rillet.evals.plots import learning_curve
from rillet.pipelines.config import OnlineConfig
from rillet.pipelines.metrics import read_jsonl


def read_curve(run_dir: str) -> list[tuple[int, float]]:
    """The greedy evaluations of an online run directory: [(env_steps, mean return), ...]."""
    return [(c["env_steps"], c["return_mean"]) for c in read_jsonl(os.path.join(run_dir, "curve.jsonl"))]


def train_and_read_curve(config: OnlineConfig) -> dict:
    """Trains (or resumes) `config` online: {"summary": train_online's summary, "curve": read_curve}."""
    from rillet.pipelines.online import train_online

    summary = train_online(config)
    return {"summary": summary, "curve": read_curve(config.run_dir)}


def write_json(path: str, value) -> None:
    """Writes `value` as indented JSON to `path`, creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, indent=2)


def compare_curves(out: str, name: str, runs: Mapping[str, dict], title: str, target: float | None) -> dict:
    """Per run (train_and_read_curve's dicts): best and final eval, env steps, updates, wall time.
    Writes <out>/<name>.png (the curves) and <out>/<name>.json (the table), prints the table."""
    png = learning_curve({k: v["curve"] for k, v in runs.items()}, os.path.join(out, f"{name}.png"),
                         title=title, target=target)
    table = {k: {"best_return": max(y for _, y in v["curve"]), "final_return": v["curve"][-1][1],
                 "env_steps": v["summary"]["env_steps"], "updates": v["summary"]["updates"],
                 "wall_s": v["summary"]["wall_s"]} for k, v in runs.items()}
    write_json(os.path.join(out, f"{name}.json"), table)
    for k, row in table.items():
        print(f"{k:>14}: best {row['best_return']:7.1f}  final {row['final_return']:7.1f}  "
              f"env steps {row['env_steps']}  updates {row['updates']}  {row['wall_s']} s")
    print(f"figure: {png}")
    return table


def plot_runs(runs: tuple[str, ...], labels: tuple[str, ...] = (), out: str = "runs/curves.png",
              title: str = "", target: float = 0.0) -> str:
    """One figure of the greedy-eval curves (curve.jsonl) of several online run directories.

    Args:
        runs: the run directories.
        labels: one legend label per run (default: each directory's name).
        out: the PNG to write.
        title: the figure's title.
        target: a dashed line at this return (0: none).
    """
    labels = labels or tuple(os.path.basename(os.path.normpath(r)) for r in runs)
    curves = {label: read_curve(run) for label, run in zip(labels, runs)}
    for label, points in curves.items():
        best = max(points, key=lambda p: p[1]) if points else (0, float("nan"))
        print(f"{label:>24}: best {best[1]:7.1f} at {best[0]} env steps")
    return learning_curve(curves, out, title=title, target=target or None)


def train_offline_run(data: Sequence[str], run_dir: str, **options) -> dict:
    """Trains (or resumes, or only re-evaluates) `rillet train-offline` on `data`; its summary."""
    from rillet.pipelines.offline import OfflineConfig, train_offline

    return train_offline(OfflineConfig(data=tuple(data), run_dir=run_dir, progress=False, **options))


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grouped_bars(values: Mapping[str, Mapping[str, float | None]], errors: Mapping[str, Mapping[str, float | None]],
                 path: str, title: str, ylabel: str = "episode return") -> str:
    """One group of bars per key of `values` (e.g. task), one bar per column (e.g. policy), with
    error bars where `errors` has them; None is a missing bar. Writes a PNG to `path`."""
    import numpy as np

    plt = pyplot()
    groups = list(values)
    columns = list(values[groups[0]])
    fig, ax = plt.subplots(figsize=(max(5, 2.5 * len(groups)), 4), dpi=100)
    width = 0.8 / len(columns)
    for j, col in enumerate(columns):
        ys = [np.nan if values[g][col] is None else values[g][col] for g in groups]
        errs = [np.nan if errors[g].get(col) is None else errors[g][col] for g in groups]
        ax.bar(np.arange(len(groups)) + (j - (len(columns) - 1) / 2) * width, ys, width, yerr=errs, capsize=3,
               label=col)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set(ylabel=ylabel, title=title)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def seed_dots(table: Mapping[str, dict], settings: Sequence[str], references: Mapping[str, float], path: str,
              title: str, reference_label: str = "dataset mean", ylabels: Mapping[str, str] | None = None) -> str:
    """One panel per task: per setting a bar at its mean over seeds (table[setting]["mean"][task]) and a
    dot per seed (table[setting]["per_seed"][seed][task]); a dashed line at references[task]; each panel's
    y label is ylabels[task] (default "episode return")."""
    plt = pyplot()
    tasks = sorted(references)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 4), dpi=100, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, s in enumerate(settings):
            ys = [row[task] for row in table[s]["per_seed"].values()]
            ax.bar(i, table[s]["mean"][task], 0.6, alpha=0.4)
            ax.scatter([i] * len(ys), ys, color="black", s=12, zorder=3)
        ax.axhline(references[task], color="grey", linestyle="--", label=reference_label)
        ax.set_xticks(range(len(settings)), settings, rotation=30, ha="right", fontsize=7)
        ax.set(title=task, ylabel=(ylabels or {}).get(task, "episode return"))
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


def loss_against_size(rows: dict[str, dict], path: str, title: str) -> str:
    """The validation loss terms of each size (rows[size][term]) against its parameter count
    (rows[size]["params"], log scale), each point named by its size."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    xs = [r["params"] for r in rows.values()]
    for term in ("loss", "bc_loss", "critic_loss"):
        ax.plot(xs, [r[term] for r in rows.values()], marker="o", label=f"validation {term}")
    for size, r in rows.items():
        ax.annotate(size, (r["params"], r["loss"]), fontsize=7)
    ax.set(xscale="log", xlabel="parameters", ylabel="validation loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def save_figure(fig, path: str) -> str:
    """Writes `fig` as a PNG to `path` (creating its folder), closes it, returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)
    return path
