"""A plain MLP Q-network (torso + linear head) for vector observations."""

from __future__ import annotations

from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp


def batch_apply(fn: Callable[[jax.Array], jax.Array], x: jax.Array, event_ndim: int) -> jax.Array:
    """Applies a single-example `fn` to `x` [..., *event] by vmapping over all leading dims.

    x: [*lead, *event] -> [*lead, *out] where `fn(event) -> out`.
    """
    lead = x.shape[: x.ndim - event_ndim]
    if not lead:
        return fn(x)
    flat = x.reshape((-1,) + x.shape[x.ndim - event_ndim :])
    out = jax.vmap(fn)(flat)
    return out.reshape(lead + out.shape[1:])


class MLP(eqx.Module):
    """ReLU MLP: obs [..., in_size] (any numeric dtype, cast to float32) -> [..., out_size].

    `hidden_sizes` may be empty (a single linear layer). With `activate_final` the output
    layer is also followed by a ReLU (useful when the MLP is a torso feeding another head).
    """

    layers: tuple[eqx.nn.Linear, ...]
    activate_final: bool = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        hidden_sizes: Sequence[int],
        out_size: int,
        key: jax.Array,
        activate_final: bool = False,
    ):
        sizes = [int(in_size), *(int(h) for h in hidden_sizes), int(out_size)]
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys))
        self.activate_final = bool(activate_final)

    @property
    def in_size(self) -> int:
        return self.layers[0].in_features

    @property
    def out_size(self) -> int:
        return self.layers[-1].out_features

    def _single(self, x: jax.Array) -> jax.Array:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1 or self.activate_final:
                x = jax.nn.relu(x)
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x).astype(jnp.float32)
        return batch_apply(self._single, x, event_ndim=1)
