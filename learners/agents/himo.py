"""HiMo: R2D2's record with HiMo's learner (`learners.himo`): the same actors, replay, batch check and
epsilon ladder. Actors act epsilon-greedily on the head "q", which in HiMo's network is q_m(h_t) =
psi'(h_t, sg phi_hat(h_t)) (each actor step computes it from the core's features, as R2D2's step computes
its Q); evaluation is greedy on it. Replay items are sequences of the config's sequence_length
(burn_in + trace_length + n_step + lookahead); the replay writer and the dataset reader
(`pipelines.agent_data.agent_batches`) both take it from `replay_item`."""

from __future__ import annotations

import dataclasses

from rillet.learners import himo
from rillet.learners.agents.r2d2 import R2D2
from rillet.learners.agents.registry import ReplayItem, learner_fields, register

HIMO = register(dataclasses.replace(
    R2D2,
    name="himo",
    **learner_fields(himo, himo.HiMoConfig),
    replay_item=lambda config: ReplayItem("sequence", config.sequence_length),
    summary="HiMo on R2D2's core: a hindsight value reads phi(h_{t+k}); acting and bootstrapping use "
            "q_m(h_t, sg phi_hat(h_t))",
))
