"""R2D2's five return estimators on one task (`rillet reproduce estimators`). Results:
docs/RESULTS.md, "Recurrent agents" (one seed each: it ranks nothing with confidence).
"""

from __future__ import annotations

import dataclasses
import os

from rillet.learners.returns import check_estimator
from rillet.reproductions.common import compare_curves, train_and_read_curve
from rillet.reproductions.r2d2_cartpole import R2D2_SMALL, R2D2_SMALL_REPLAY, partially_observable

# R2D2's five, pinned: the recorded comparison (docs/RESULTS.md) has these runs, whatever else
# returns.ESTIMATORS gains (e.g. MEME's soft Watkins Q(lambda)).
R2D2_ESTIMATORS = tuple(check_estimator(name) for name in ("nstep", "retrace", "peng", "watkins", "tree_backup"))


def estimators(out: str = "runs/estimators", total_env_steps: int = 50_000, seed: int = 0,
               target_epsilon: float = 0.05) -> dict:
    """R2D2 (R2D2_SMALL) on CartPole without velocities with each return estimator (n-step double Q,
    Retrace, Peng's Q(lambda), Watkins Q(lambda), tree-backup), same budget and seed.

    Args:
        out: the folder of the runs (one per estimator), estimators.png and estimators.json.
        total_env_steps: the env-step budget of each run.
        seed: the seed of every run.
        target_epsilon: the target policy is epsilon-greedy with this epsilon, so that Retrace,
            Watkins and tree-backup differ (with a greedy target they coincide).
    """
    runs = {}
    for name in R2D2_ESTIMATORS:
        learner = dataclasses.replace(R2D2_SMALL, estimator=name, target_epsilon=target_epsilon)
        runs[name] = train_and_read_curve(partially_observable(
            "r2d2", learner, seed, total_env_steps, os.path.join(out, name), replay=R2D2_SMALL_REPLAY))
    return compare_curves(out, "estimators", runs, "R2D2 return estimators, CartPole without velocities",
                          target=None)
