"""MEME (Kapturowski et al., ICLR 2023, "Human-level Atari 200x faster"): Agent57's composition with
MEME's parts switched on, each a shared part any value agent can switch on from its config:

    trust_region, normalise_td       `learners.td_regularisers` (bootstrap from the online network,
                                     the target network only bounds the update; TD errors / sigma)
    distillation                     `learners.distillation` (a head "pi" trained towards the greedy
                                     policy of the combined value; actors act from it)
    estimator "soft_watkins"         `learners.returns` (the trace cut only beyond kappa * |max Q|)
    torso "nfnet"                    `learners.networks.nfnet` (normaliser-free residual torso)

and MEME's policy family: N = 16 policies with discounts in [0.97, 0.9997] on Agent57's ladder
(gamma0 = 0.9997 for j = 0, gamma1 = 0.997 at j = 7, 8, gamma2 = 0.97 at j = N - 1; the ladder's shape
between them is Agent57's, our reading), lambda = 0.95. The learner is Agent57's (`agent57.init`,
`agent57.update`); nothing of it is copied here.
"""

from __future__ import annotations

import dataclasses

from rillet.learners.agent57 import Agent57Config

__all__ = ["MEMEConfig"]


@dataclasses.dataclass(frozen=True)
class MEMEConfig(Agent57Config):
    """Agent57's options with MEME's defaults (PAPERS.md, MEME): N = 16, gamma in [0.97, 0.9997],
    lambda 0.95, soft Watkins Q(lambda) with kappa 0.01 (unverified), the trust region (alpha 3,
    unverified), loss and priority normalisation (floor 0.01), the distillation head (actors act
    epsilon-greedily over its argmax), the NFNet torso. Switch any part off to ablate it, e.g.
    `--meme.no-trust-region`."""

    num_policies: int = 16
    gamma0: float = 0.9997
    gamma2: float = 0.97
    lambda_: float = 0.95
    estimator: str = "soft_watkins"
    trust_region: bool = True
    normalise_td: bool = True
    distillation: bool = True
    torso: str = "nfnet"
