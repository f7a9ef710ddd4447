"""Judging training settings across seeds: per task, each seed's return, and how many seeds of a
setting beat both the baseline trained with the same seed and the dataset's mean return on every task.

One evaluation of one seed is a noisy sample (greedy returns of an offline policy can swing by
hundreds between evaluations), so a claim "setting A beats B" is made per seed and counted.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class SeedResult:
    """One training run: its setting's label, its seed, and per task the mean evaluation return of
    each evaluation in step order (returns[task] is [E] floats, E >= 1)."""

    setting: str
    seed: int
    returns: Mapping[str, Sequence[float]]


def final_return(returns: Sequence[float], last: int = 1) -> float:
    """Mean of the last `last` evaluations ([E] -> scalar; all of them when E < last)."""
    if not len(returns):
        raise ValueError("final_return: a run has no evaluation.")
    if last < 1:
        raise ValueError(f"final_return: last={last} must be >= 1.")
    return float(np.mean(np.asarray(returns, np.float64)[-last:]))


def compare_seeds(results: Sequence[SeedResult], baseline: str, data_means: Mapping[str, float],
                  last: int = 1) -> dict:
    """Per setting: {"per_seed": {seed: {task: return}}, "mean": {task}, "std": {task} (over seeds, ddof 0),
    "wins": [seeds that beat the same-seed baseline and the data mean on every task], "seeds": [all seeds]}.
    The baseline's own "wins" are seeds that beat the data mean on every task.

    Raises ValueError if two runs share a (setting, seed), the runs' tasks differ from `data_means`'s,
    or a non-baseline seed has no baseline run with that seed.
    """
    tasks = sorted(data_means)
    table: dict[str, dict[int, dict[str, float]]] = {}
    for r in results:
        if sorted(r.returns) != tasks:
            raise ValueError(f"compare_seeds: run '{r.setting}' seed {r.seed} has tasks {sorted(r.returns)}, "
                             f"the others {tasks}; compare runs trained on the same datasets.")
        if r.seed in table.setdefault(r.setting, {}):
            raise ValueError(f"compare_seeds: two runs of '{r.setting}' with seed {r.seed}; give each once.")
        table[r.setting][r.seed] = {t: final_return(r.returns[t], last) for t in tasks}
    if baseline not in table:
        raise ValueError(f"compare_seeds: no run of the baseline '{baseline}' among {sorted(table)}.")
    out = {}
    for setting, per_seed in table.items():
        wins = []
        for seed, row in sorted(per_seed.items()):
            if setting != baseline and seed not in table[baseline]:
                raise ValueError(f"compare_seeds: '{setting}' has seed {seed} but the baseline '{baseline}' "
                                 f"has only seeds {sorted(table[baseline])}; train the baseline with that seed.")
            rivals = [data_means] + ([] if setting == baseline else [table[baseline][seed]])
            if all(row[t] > rival[t] for rival in rivals for t in tasks):
                wins.append(seed)
        values = {t: np.array([row[t] for row in per_seed.values()]) for t in tasks}
        out[setting] = {"per_seed": {s: per_seed[s] for s in sorted(per_seed)}, "wins": wins,
                        "seeds": sorted(per_seed), "mean": {t: float(v.mean()) for t, v in values.items()},
                        "std": {t: float(v.std()) for t, v in values.items()}}
    return out
