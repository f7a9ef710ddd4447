"""MEME: Agent57's record (split value, discount ladder, bandit meta-controller, novelty actors) with
MEME's config; its parts (trust region, TD normalisation, distillation head the actors act from, soft
Watkins Q(lambda), NFNet torso) are switched on by `MEMEConfig`, and each is shared with the other value
agents, so the record replaces nothing but the name and the options."""

from __future__ import annotations

import dataclasses

from rillet.learners import meme
from rillet.learners.agents.agent57 import AGENT57
from rillet.learners.agents.registry import register

MEME = register(dataclasses.replace(
    AGENT57,
    name="meme",
    config_type=meme.MEMEConfig,
    summary="Agent57 + trust region, TD normalisation, a distilled acting policy, soft Watkins Q(lambda), NFNet torso",
))
