"""Per-episode statistics of the actors' batched RLDS steps: return, length, the intrinsic and episodic
returns when the steps carry NGU's `prev_intrinsic_reward` and `prev_episodic_reward`, the count of
distinct observations in the episode and in all steps this stage has seen (lifelong coverage: every
environment, every episode since the stage started; a resumed run counts afresh) and the policy index
j, reported once per finished episode. A transform stage: steps pass through unchanged.

    stream = Stream(envpool_actor(...)) | episode_stats(lambda stats: episodes.append(stats))
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

__all__ = ["episode_stats", "summarise_episodes"]


class _Episodes:
    """Running sums per environment; `step` returns the episodes that ended at this step."""

    def __init__(self):
        self.returns = self.intrinsic = self.episodic = self.lengths = None
        self.seen: list[set] = []
        self.ever: set = set()  # hashes of every observation seen, all environments

    def step(self, s: dict) -> list[dict]:
        n = len(s["is_first"])
        if self.returns is None:
            self.returns, self.intrinsic, self.episodic = np.zeros(n), np.zeros(n), np.zeros(n)
            self.lengths = np.zeros(n, np.int64)
            self.seen = [set() for _ in range(n)]
        extras = s.get("extras", {})
        intrinsic, episodic = extras.get("prev_intrinsic_reward"), extras.get("prev_episodic_reward")
        ended = []
        for e in range(n):
            if s["is_first"][e]:
                self.returns[e] = self.intrinsic[e] = self.episodic[e] = self.lengths[e] = 0
                self.seen[e] = set()
            observed = hash(np.asarray(s["observation"][e]).tobytes())
            self.seen[e].add(observed)
            self.ever.add(observed)
            if intrinsic is not None:
                self.intrinsic[e] += float(intrinsic[e])  # r_i on arriving at this observation
            if episodic is not None:
                self.episodic[e] += float(episodic[e])
            if s["is_last"][e]:
                j = int(extras["policy_index"][e]) if "policy_index" in extras else 0
                ended.append({"policy_index": j, "return": float(self.returns[e]), "length": int(self.lengths[e]),
                              "intrinsic_return": float(self.intrinsic[e]), "episodic_return": float(self.episodic[e]),
                              "distinct_observations": len(self.seen[e]),
                              "distinct_observations_total": len(self.ever)})
            else:
                self.returns[e] += float(s["reward"][e])
                self.lengths[e] += 1
        return ended


def episode_stats(on_episode: Callable[[dict], None]) -> Callable[[Iterator[dict]], Iterator[dict]]:
    """Transform over batched steps [B, ...]: calls on_episode({"policy_index", "return", "length",
    "intrinsic_return", "episodic_return", "distinct_observations", "distinct_observations_total"}) for
    each episode that ends (at its is_last step)."""

    def stage(it):
        episodes = _Episodes()
        for s in it:
            for stats in episodes.step(s):
                on_episode(stats)
            yield s

    return stage


def summarise_episodes(episodes: list[dict]) -> dict[str, float]:
    """Means over finished episodes: actor return, length, intrinsic and episodic returns and distinct
    observations, the lifelong count of distinct observations ("distinct_observations_total", the latest),
    and per policy index j the mean return ("return_j{j}") and the episodes played ("episodes_j{j}": a
    bandit's pulls of arm j)."""
    if not episodes:
        return {}
    summary = {f"episode_{k}": float(np.mean([e[k] for e in episodes]))
               for k in ("return", "length", "intrinsic_return", "episodic_return",
                                                                    "distinct_observations")}
    summary["episodes"] = float(len(episodes))
    if "distinct_observations_total" in episodes[0]:
        summary["distinct_observations_total"] = float(max(e["distinct_observations_total"] for e in episodes))
    for j in sorted({e["policy_index"] for e in episodes}):
        played = [e["return"] for e in episodes if e["policy_index"] == j]
        summary[f"return_j{j}"], summary[f"episodes_j{j}"] = float(np.mean(played)), float(len(played))
    return summary
