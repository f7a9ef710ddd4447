"""Representational collapse probe (Barbero et al., NeurIPS 2024, section 4): for pairs of sequences
that differ only at their end, the distance between the last position's representations, per layer,
in the ∞-norm and the 1-norm, as a function of length, in float32 and bfloat16; and the length from
which bfloat16 makes the final-layer representations bitwise equal.

    result = collapse_profile(model, lengths=[8, 16, ..., 1024], family="ones_zero")
    result["dtypes"]["bfloat16"]["collapse_length"]

All sequences of all lengths run through `model_api.last_states`: one vmapped, jitted call per row
width (and per chunk), prefixes shared for causal models.
"""

from __future__ import annotations

import time
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from rillet.errors import ConfigError
from rillet.evals.probes.inputs import PairFn, get_family, with_separators
from rillet.evals.probes.model_api import check_sequence_model, last_states
from rillet.learners.networks.attention import cast_floating

__all__ = ["pair_distances", "collapse_length", "collapse_profile", "DTYPES"]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def pair_distances(model, lengths: Sequence[int], family: PairFn, **kw) -> dict:
    """Per length n: distances between the last-position states of family(n)'s two sequences.

    Returns {"inf": [N, L], "l1": [N, L] per layer, "output_inf": [N] (outputs), "equal": [N] bool
    (final layer bitwise equal)}, as numpy arrays.
    """
    pairs = [family(int(n)) for n in lengths]
    hidden, output = last_states(model, [s for p in pairs for s in p], **kw)  # [2N, L, d], [2N, K]
    diff, out_diff = hidden[0::2] - hidden[1::2], output[0::2] - output[1::2]
    return {"inf": np.abs(diff).max(-1), "l1": np.abs(diff).sum(-1), "output_inf": np.abs(out_diff).max(-1),
            "equal": np.all(hidden[0::2, -1] == hidden[1::2, -1], axis=-1)}


def collapse_length(lengths: Sequence[int], equal: np.ndarray) -> int | None:
    """The smallest probed length from which every longer probed length is bitwise equal, or None."""
    out = None
    for n, e in sorted(zip(lengths, equal), reverse=True):
        if not e:
            break
        out = int(n)
    return out


def collapse_profile(model, lengths: Sequence[int], family="ones_zero", dtypes: Sequence[str] = tuple(DTYPES),
                     separator_every: int = 0, separator: int = 2, **kw) -> dict:
    """The collapse probe on `model` (see model_api for the signature) over `lengths`, one run per
    compute dtype (the model cast with cast_floating). Returns a JSON-ready dict: lengths, family,
    separator_every, num_layers and, per dtype, the distances of `pair_distances` as lists plus
    "collapse_length" and "first_equal_length" (None when never equal) and "wall_s"."""
    info = check_sequence_model(model)
    lengths = sorted({int(n) for n in lengths})
    if not lengths or lengths[0] < 1:
        raise ConfigError(f"lengths must be integers >= 1, got {lengths}.")
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        raise ConfigError(f"unknown dtypes {unknown}; use {sorted(DTYPES)}.")
    pair_fn = with_separators(get_family(family), separator_every, separator)
    out = {"lengths": lengths, "family": family if isinstance(family, str) else getattr(family, "__name__", "user"),
           "separator_every": separator_every, "num_layers": info.num_layers, "dtypes": {}}
    for name in dtypes:
        t0 = time.perf_counter()
        d = pair_distances(cast_floating(model, DTYPES[name]), lengths, pair_fn, **kw)
        equal = d["equal"]
        first = next((n for n, e in zip(lengths, equal) if e), None)
        out["dtypes"][name] = {**{k: v.tolist() for k, v in d.items()},
                               "collapse_length": collapse_length(lengths, equal),
                               "first_equal_length": first, "wall_s": round(time.perf_counter() - t0, 3)}
    return out
