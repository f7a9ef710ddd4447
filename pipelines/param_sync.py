"""Policy parameters from the learner to actors in other processes, through a Reverb table.

No RPC of our own: the learner inserts its online network's arrays into a one-item LIFO table
("params") on the replay server; actor processes sample the newest item every few ticks.
The table's signature is derived from the network template, so a mismatched network fails fast.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import numpy as np
import reverb
import tensorflow as tf

PARAMS_TABLE = "params"


def _leaves(template: Any) -> list:
    return jax.tree.leaves(eqx.filter(template, eqx.is_array))


def params_table(template: Any) -> reverb.Table:
    """A table holding the newest parameters only (max_size 1, LIFO, FIFO removal)."""
    signature = [tf.TensorSpec(np.shape(x), np.asarray(x).dtype) for x in _leaves(template)]
    return reverb.Table(name=PARAMS_TABLE, sampler=reverb.selectors.Lifo(), remover=reverb.selectors.Fifo(),
                        max_size=1, rate_limiter=reverb.rate_limiters.MinSize(1), signature=signature)


class ParamsPublisher:
    """Learner side: ``publish(network)`` replaces the table's item with the network's arrays."""

    def __init__(self, address: str):
        self._client = reverb.Client(address)

    def publish(self, network: Any) -> None:
        self._client.insert([np.asarray(x) for x in _leaves(network)], priorities={PARAMS_TABLE: 1.0})


class ParamsSubscriber:
    """Actor side: a ``params_source`` callable returning the newest network, refreshed from the
    table every `refresh_every` calls (blocks on the first call until the learner published)."""

    def __init__(self, address: str, template: Any, refresh_every: int = 50):
        self._client = reverb.Client(address)
        self._arrays, self._static = eqx.partition(template, eqx.is_array)
        self._treedef = jax.tree.structure(self._arrays)
        self._refresh_every = refresh_every
        self._calls = 0
        self._current = None

    def __call__(self) -> Any:
        if self._current is None or self._calls % self._refresh_every == 0:
            sample = next(iter(self._client.sample(PARAMS_TABLE, num_samples=1)))
            data = sample[0].data if isinstance(sample, list) else sample.data
            arrays = jax.tree.unflatten(self._treedef, [np.asarray(x) for x in data])
            self._current = eqx.combine(arrays, self._static)
        self._calls += 1
        return self._current
