"""Learning-curve plots (PNG) from metrics records."""

from __future__ import annotations

import os
from typing import Mapping, Sequence


def learning_curve(curves: Mapping[str, Sequence[tuple[float, float]]], path: str,
                   xlabel: str = "environment steps", ylabel: str = "greedy return",
                   title: str = "", target: float | None = None) -> str:
    """Plots one line per name from [(x, y), ...] points and writes a PNG to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, points in curves.items():
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", label=name)
    if target is not None:
        ax.axhline(target, linestyle="--", color="grey", label=f"target {target:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
