"""PAC's Perceiver as a probed sequence model: its latents cross-attend a growing number of input
tokens (token table + sinusoidal positions), then its latent self-attention layers run.

    model = PerceiverSequence(perceiver.PerceiverActorCritic(...), vocab_size=4, key=key)
    model(tokens [T]) -> SequenceOutput(hidden [1 + layers, N, d], output [N, d])

hidden[0] holds the latents after the cross-attention encoder, hidden[l] after self-attention layer l;
output the final LayerNorm'd latents. Not causal: every length runs at its exact shape.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from rillet.learners.networks.perceiver import PerceiverActorCritic
from rillet.learners.networks.transformer import SequenceOutput, sinusoidal_positions

__all__ = ["PerceiverSequence"]


class PerceiverSequence(eqx.Module):
    """See the module docstring. `network`'s encoder, layers and ln_latents are used as they are."""

    network: PerceiverActorCritic
    table: jax.Array  # [V, d] token embeddings
    causal: bool = eqx.field(static=True, default=False)

    def __init__(self, network: PerceiverActorCritic, vocab_size: int, key: jax.Array):
        self.network = network
        self.table = jax.random.normal(key, (vocab_size, network.latents.shape[-1]), jnp.float32)
        self.causal = False

    def embed(self, tokens: jax.Array) -> jax.Array:
        """tokens [T] int -> [T, d]."""
        return self.table[tokens].astype(self.network.dtype)

    def __call__(self, inputs: jax.Array) -> SequenceOutput:
        """tokens [T] int or embeddings [T, d] -> (hidden [1 + layers, N, d], output [N, d])."""
        net = self.network
        x = self.embed(inputs) if jnp.issubdtype(inputs.dtype, jnp.integer) else inputs.astype(net.dtype)
        x = x + sinusoidal_positions(*x.shape).astype(x.dtype)
        lat = net.encoder(net.latents, x)
        hidden = [lat[None]]
        if net.layers is not None:
            params, static = eqx.partition(net.layers, eqx.is_array)
            lat, per_layer = jax.lax.scan(lambda h, p: (eqx.combine(p, static)(h),) * 2, lat, params)
            hidden.append(per_layer)
        return SequenceOutput(jnp.concatenate(hidden), net.ln_latents(lat))
