"""Sequence-model probes (Barbero et al., NeurIPS 2024): representational collapse and over-squashing,
on any eqx.Module with the call signature documented in `model_api`."""

from rillet.evals.probes.collapse import collapse_profile
from rillet.evals.probes.inputs import FAMILIES, insert_separators, with_separators
from rillet.evals.probes.model_api import check_sequence_model, last_states
from rillet.evals.probes.oversquash import path_bound, sensitivity_profile

__all__ = ["collapse_profile", "sensitivity_profile", "path_bound", "check_sequence_model", "last_states",
           "insert_separators", "with_separators", "FAMILIES"]
