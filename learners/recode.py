"""RECODE (Saade et al., 2023, "Unlocking the Power of Representations in Long-term Novelty-based
Exploration"): the paper's host agent, MEME, with NGU's episodic x lifelong intrinsic reward replaced by
the cluster memory's (`actors.recode_novelty`, `actors.cluster_memory`). The learner is MEME's
(Agent57's) unchanged; only the actors' novelty differs, chosen by NGU's `novelty` option, so any
NGU-family agent can use it (`--ngu.novelty recode`).

The embedding f is CASM's observation encoder (`learners.casm`, `embedding_model = "casm"`), trained
with the masked-action loss on each learned trace as one window of T + 1 steps, in NGU's "embedding"
optimiser group; `--recode.embedding-model inverse_dynamics` gives NGU's embedding instead. Where this
reading departs from the paper: RND is still trained with the other novelty networks although RECODE's
reward does not read it, and CASM's sizes are CPU-sized guesses (`learners.casm.CASMConfig`).
"""

from __future__ import annotations

import dataclasses

from rillet.learners.meme import MEMEConfig

__all__ = ["RECODEConfig"]


@dataclasses.dataclass(frozen=True)
class RECODEConfig(MEMEConfig):
    """MEME's options with the cluster memory as the intrinsic reward (capacity 50,000 atoms, count
    decay 0.999: PAPERS.md; the other constants: `actors.cluster_memory.ClusterConfig`) over CASM's
    embedding."""

    novelty: str = "recode"
    embedding_model: str = "casm"
