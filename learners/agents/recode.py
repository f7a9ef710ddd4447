"""RECODE: MEME's record with RECODE's config, whose `novelty = "recode"` makes the actors score
observations with the cluster memory (carried whole through checkpoints) instead of NGU's novelty."""

from __future__ import annotations

import dataclasses

from rillet.learners import recode
from rillet.learners.agents.meme import MEME
from rillet.learners.agents.registry import register

RECODE = register(dataclasses.replace(
    MEME,
    name="recode",
    config_type=recode.RECODEConfig,
    summary="MEME with the cluster-memory (long-term count) intrinsic reward in place of NGU's",
))
