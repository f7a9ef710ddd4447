"""Policy parameters from the learner to actors in other processes, through a Reverb table.

No RPC of our own, and one channel: the learner inserts its online network's arrays, the learner step
they come from and its config fingerprint into a one-item LIFO table ("params") on the replay server;
actor processes sample the newest item every few ticks. Reverb, not Ray's object store, because the
actors already hold a connection to this server for their writes, so a run without Ray (`rillet act`)
and one launched on Ray share the channel, and a restarted server restores the newest params from its
own checkpoint with the replay tables.

Whoever can reach the server can write to it (Reverb has no authentication): the fingerprint lets an
actor notice params published by a learner of another environment, agent or network (ParamsMismatchError)
instead of acting with them; fence the server's port for the rest (README, "Scale out").
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import equinox as eqx
import jax
import numpy as np
import reverb
import tensorflow as tf

from rillet.errors import ReplayUnreachableError, SpecMismatchError

PARAMS_TABLE = "params"
DIGEST_BYTES = 32


class ParamsMismatchError(SpecMismatchError):
    """The params on the server come from a learner whose config differs from this actor's."""


def fingerprint_digest(fingerprint: dict) -> np.ndarray:
    """SHA-256 of a learner fingerprint (`OnlineConfig.learner_fingerprint()`) as uint8 [32]."""
    text = json.dumps(fingerprint, sort_keys=True, default=str).encode()
    return np.frombuffer(hashlib.sha256(text).digest(), np.uint8).copy()


def _leaves(template: Any) -> list:
    return jax.tree.leaves(eqx.filter(template, eqx.is_array))


def params_tables(template: Any) -> list[reverb.Table]:
    """[the "params" table]: the network's arrays, then step int64 [] and digest uint8 [32]; the newest
    item only (max_size 1, LIFO)."""
    signature = [tf.TensorSpec(np.shape(x), np.asarray(x).dtype) for x in _leaves(template)]
    signature += [tf.TensorSpec((), tf.int64), tf.TensorSpec((DIGEST_BYTES,), tf.uint8)]
    return [reverb.Table(name=PARAMS_TABLE, sampler=reverb.selectors.Lifo(), remover=reverb.selectors.Fifo(),
                         max_size=1, rate_limiter=reverb.rate_limiters.MinSize(1), signature=signature)]


class ParamsPublisher:
    """Learner side: ``publish(network, step)`` replaces the table's item."""

    def __init__(self, address: str, fingerprint: dict):
        self._client = reverb.Client(address)
        self._digest = fingerprint_digest(fingerprint)

    def publish(self, network: Any, step: int) -> None:
        arrays = [np.asarray(x) for x in _leaves(network)]
        self._client.insert(arrays + [np.int64(step), self._digest], priorities={PARAMS_TABLE: 1.0})


class ParamsSubscriber:
    """Actor side: a ``params_source`` callable returning the newest network, refreshed from the
    table every `refresh_every` calls (waits, bounded and saying so, on the first call until a learner
    published). `step` is the learner step of the params in use; `policy_lag` the learner steps the
    params were behind the newest ones when last replaced (0 before the first refresh). A server that
    does not answer within `answer_timeout_s` before a refresh raises ConnectionError (a sample from a
    dead server would block for ever)."""

    def __init__(self, address: str, template: Any, fingerprint: dict, refresh_every: int = 50,
                 first_timeout_s: float = 300.0, answer_timeout_s: int = 10):
        self._client = reverb.Client(address)
        self._first_timeout_s, self._answer_timeout_s = first_timeout_s, answer_timeout_s
        self._address = address
        self._arrays, self._static = eqx.partition(template, eqx.is_array)
        self._treedef = jax.tree.structure(self._arrays)
        self._digest = fingerprint_digest(fingerprint)
        self._refresh_every = refresh_every
        self._calls = 0
        self._current = None
        self.step, self.policy_lag = -1, 0

    def _newest(self) -> list:
        try:
            self._client.server_info(timeout=self._answer_timeout_s)
        except (reverb.errors.ReverbError, RuntimeError) as e:
            raise ConnectionError(f"the Reverb server at {self._address} does not answer ({type(e).__name__})") from e
        sample = next(iter(self._client.sample(PARAMS_TABLE, num_samples=1)))
        data = sample[0].data if isinstance(sample, list) else sample.data
        if not np.array_equal(np.asarray(data[-1]), self._digest):
            raise ParamsMismatchError(
                f"the params at {self._address} were published by a learner with another environment, agent or "
                "network than this actor's; start the actors with the learner's options (or point "
                "--replay.address at this run's own replay server).")
        return data

    def _await_first(self) -> None:
        """Waits (bounded, saying so) until a learner has published; ReplayUnreachableError after the wait."""
        started, said = time.monotonic(), False
        while self._client.server_info(timeout=30)[PARAMS_TABLE].current_size == 0:
            waited = time.monotonic() - started
            if waited > self._first_timeout_s:
                raise ReplayUnreachableError(
                    f"no learner has published params at {self._address} in {waited:.0f} s; start the learner "
                    "(`rillet train-online AGENT --no-local-actors --replay.address ...`) with the same options.")
            if not said:
                print(f"rillet actor: waiting for a learner to publish params at {self._address}...", flush=True)
                said = True
            time.sleep(1.0)

    def __call__(self) -> Any:
        if self._current is None:
            self._await_first()
        if self._current is None or self._calls % self._refresh_every == 0:
            data = self._newest()
            arrays = jax.tree.unflatten(self._treedef, [np.asarray(x) for x in data[:-2]])
            self._current = eqx.combine(arrays, self._static)
            step = int(data[-2])
            self.policy_lag, self.step = (step - self.step if self.step >= 0 else 0), step
        self._calls += 1
        return self._current
