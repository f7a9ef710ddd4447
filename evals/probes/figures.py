"""PNG figures of probe results (the JSON dicts of collapse_profile, oversquash_result, task_result),
several runs per figure, one line each, labelled by name."""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

__all__ = ["plot_collapse", "plot_oversquash", "plot_accuracy", "plot_any"]


def _axes(ncols: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4), dpi=100, squeeze=False)
    return plt, fig, axes[0]


def _save(plt, fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_collapse(runs: Mapping[str, dict], path: str) -> str:
    """Final-layer ∞-norm distance vs length (log-log), one line per run and dtype; zero distances
    (bitwise equal) are drawn at the bottom of the axis and the bf16 collapse length marked."""
    plt, fig, (ax,) = _axes(1)
    for name, run in runs.items():
        for dtype, res in run["dtypes"].items():
            d = np.asarray(res["inf"])[:, -1]
            line, = ax.plot(run["lengths"], np.maximum(d, 1e-9), marker="o", ms=3,
                            linestyle="-" if dtype == "float32" else "--", label=f"{name} {dtype}")
            if res["collapse_length"] is not None and dtype == "bfloat16":
                ax.axvline(res["collapse_length"], color=line.get_color(), alpha=0.4, linestyle=":")
    ax.set(xscale="log", yscale="log", xlabel="length n", ylabel="‖h_last − h*_last‖∞ (final layer; 1e-9 = equal)",
           title="representational collapse")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_oversquash(runs: Mapping[str, dict], path: str) -> str:
    """Left: the final layer's sensitivity profile over positions, normalised to its maximum, beside
    the path-count bound (dotted; drawn once for runs with the same bound); right: the same for the output."""
    plt, fig, axes = _axes(2)
    drawn: set = set()
    for name, run in runs.items():
        bound = np.asarray(run["bound"])
        new_bound = tuple(bound.tolist()) not in drawn
        drawn.add(tuple(bound.tolist()))
        for ax, key in zip(axes, ("final", "output")):
            prof = np.asarray(run["layers"])[-1] if key == "final" else np.asarray(run["output"])
            line, = ax.plot(prof / prof.max(), label=name)
            if new_bound:
                label = f"path bound ({len(run['layers'])} layers, window {run.get('window', 0)})"
                ax.plot(bound / bound.max(), linestyle=":", color=line.get_color(), label=label)
    for ax, key in zip(axes, ("final layer ‖∂h_n/∂v_i‖", "output ‖∂y_n/∂v_i‖")):
        ax.set(yscale="log", xlabel="input position i", ylabel=f"{key} / max", title="over-squashing")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_accuracy(runs: Mapping[str, dict], path: str) -> str:
    """Accuracy vs length per run and dtype; the training lengths shaded."""
    plt, fig, (ax,) = _axes(1)
    for name, run in runs.items():
        for dtype, acc in run["accuracy"].items():
            ax.plot(run["eval_lengths"], acc, marker="o", linestyle="-" if dtype == "float32" else "--",
                    label=f"{name} {dtype}")
        ax.axvspan(*run["train_lengths"], color="grey", alpha=0.08)
    ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="length n (data tokens)", ylabel="accuracy",
           title="accuracy vs length (shaded: training lengths)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_any(runs: Mapping[str, dict], path: str) -> str:
    """Picks the plot from the results' keys (all runs must be of one kind)."""
    first = next(iter(runs.values()))
    if "dtypes" in first:
        return plot_collapse(runs, path)
    if "bound" in first:
        return plot_oversquash(runs, path)
    return plot_accuracy(runs, path)
