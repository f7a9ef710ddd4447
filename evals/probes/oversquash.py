"""Over-squashing probe (Barbero et al., NeurIPS 2024, section 5): the sensitivity ‖∂y_n/∂v_i‖ of the
last position's state y_n (every layer's, and the output's) to each input embedding v_i, as a profile
over positions i, beside the path-count bound: ‖∂y_n/∂v_i‖ is bounded by a sum over the causal paths
i = k_0 <= k_1 <= ... <= k_L = n through the L layers, each step weighted by (attention weight + the
residual's identity), so early tokens, with more paths to n, can weigh more than late ones.

    profile = sensitivity_profile(model, tokens [B, T])     # {"layers": [L, T], "output": [T]}
    bound = path_bound(T, L, window=0, weighting="count")    # [T]
"""

from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet.errors import ConfigError
from rillet.evals.probes.model_api import check_sequence_model

__all__ = ["jacobian_norms", "sensitivity_profile", "path_bound", "region_means", "WEIGHTINGS"]

WEIGHTINGS = ("count", "uniform")


@eqx.filter_jit
def jacobian_norms(model, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """tokens [T] int -> (‖∂hidden[l, -1]/∂v_i‖_F [L, T], ‖∂output[-1]/∂v_i‖_F [T]), float32, by
    reverse mode (jax.jacrev) with respect to the input embeddings v = model.embed(tokens) [T, d]."""
    emb = model.embed(tokens)

    def last(v):
        hidden, output = model(v)
        return hidden[:, -1].astype(jnp.float32), output[-1].astype(jnp.float32)

    jh, jo = jax.jacrev(last)(emb)  # [L, d, T, d_in], [K, T, d_in]
    sq = lambda j, axes: jnp.sqrt(jnp.sum(jnp.square(j.astype(jnp.float32)), axis=axes))  # noqa: E731
    return sq(jh, (1, 3)), sq(jo, (0, 2))


def sensitivity_profile(model, tokens) -> dict:
    """The mean over sequences tokens [B, T] (or one [T]) of `jacobian_norms`: JSON-ready dict with
    "layers" [L, T] and "output" [T] (lists), "length" T and "num_sequences" B."""
    check_sequence_model(model)
    tokens = np.atleast_2d(np.asarray(tokens, np.int32))
    per_layer, output = jax.vmap(lambda t: jacobian_norms(model, t))(jnp.asarray(tokens))
    return {"layers": np.asarray(per_layer.mean(0)).tolist(), "output": np.asarray(output.mean(0)).tolist(),
            "length": int(tokens.shape[1]), "num_sequences": int(tokens.shape[0])}


def path_bound(length: int, num_layers: int, window: int = 0, weighting: str = "count") -> np.ndarray:
    """float64 [T]: row n = T-1 of M^L, M [T, T] the one-layer step from key i to query k (k >= i,
    k - i < window if window > 0) plus the residual identity. weighting "count": M = mask + I (the
    number of paths, the residual a separate edge); "uniform": M = mask / row count + I (uniform
    attention weights). Profiles are compared by shape: normalise before plotting."""
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"weighting={weighting!r}: use one of {WEIGHTINGS}.")
    k, i = np.arange(length)[:, None], np.arange(length)[None, :]
    mask = (i <= k) & ((k - i < window) if window > 0 else True)
    step = mask.astype(np.float64)
    if weighting == "uniform":
        step /= step.sum(1, keepdims=True)
    step += np.eye(length)
    v = np.zeros(length)
    v[-1] = 1.0
    for _ in range(num_layers):
        v = v @ step
    return v


def region_means(profile) -> dict:
    """profile [T] (T >= 8) -> the summary the results tables use, normalised by the profile's maximum:
    "first" (i = 0), "early" (mean over i < T/4), "middle" (3T/8 <= i < 5T/8), "late" (3T/4 <= i < T-1: the
    last token excluded), "last" (i = T-1); and the raw "first_raw", "last_raw"."""
    p = np.asarray(profile, np.float64)
    t = len(p)
    if t < 8:
        raise ConfigError(f"region_means needs a profile of length >= 8, got {t}.")
    q = p / p.max()
    return {"first": float(q[0]), "early": float(q[:t // 4].mean()), "middle": float(q[3 * t // 8:5 * t // 8].mean()),
            "late": float(q[3 * t // 4:t - 1].mean()), "last": float(q[-1]), "first_raw": float(p[0]),
            "last_raw": float(p[-1])}


def profiles_at_lengths(model, lengths: Sequence[int], num_sequences: int, vocab: int, seed: int = 0) -> dict:
    """sensitivity_profile at each length on `num_sequences` random sequences of tokens 0..vocab-1."""
    rng = np.random.default_rng(seed)
    return {int(n): sensitivity_profile(model, rng.integers(0, vocab, (num_sequences, int(n))))
            for n in lengths}
