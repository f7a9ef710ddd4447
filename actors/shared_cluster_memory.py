"""One RECODE cluster memory that every actor thread of a process reads and updates.

Where the memory lives, and why here (in the actors' process, behind a lock):

- RECODE counts *visits*: each observation an actor sees is scored, then folded in, once. The learner
  sees observations as replay samples them: each one samples_per_insert times on average, more often
  when prioritised, and later than it was visited, so counts kept there would count replay, not visits.
- A Reverb table holds items, not one [M, D] array read and rewritten by every embedding; Reverb has
  no atomic read-modify-write of a whole table, so two writers would lose each other's updates.
- In one process, threads share this object: `score` takes a lock around the jitted, donated
  `cluster_reward`, so the B embeddings of one actor's tick go in together and no update is lost.
  Actors in other processes (scale-out) reach one copy of this same object held by a Ray actor, Ray's
  RPC, not ours; with one actor thread per process the memory may equally sit in the actor state.

`snapshot` copies the memory out (a dict of numpy arrays, for the checkpoint that the runner saves with
the actors' carried state) and `restore` puts a saved one back on resume.
"""

from __future__ import annotations

import threading
from typing import Mapping

import jax
import numpy as np

from rillet.actors.cluster_memory import (ClusterConfig, cluster_reward, init_cluster_memory, memory_fields,
                                          memory_from_fields)
from rillet.errors import SpecMismatchError

__all__ = ["SharedClusterMemory"]


class SharedClusterMemory:
    """A `ClusterMemory` behind a lock: `score(embeddings [B, D]) -> rewards [B]` from any thread."""

    def __init__(self, config: ClusterConfig, embedding_size: int, key=0):
        self.config = config.validate()
        self.embedding_size = int(embedding_size)
        self._state = init_cluster_memory(config, self.embedding_size, key)
        self._lock = threading.Lock()

    def score(self, embeddings) -> np.ndarray:
        """Normalised novelty rewards [B] float32 of embeddings [B, D] (taken in order), which are then
        in the memory. Raises SpecMismatchError for another embedding size."""
        embeddings = np.asarray(embeddings, np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_size:
            raise SpecMismatchError(
                f"SharedClusterMemory.score expects embeddings [B, {self.embedding_size}], got "
                f"{embeddings.shape}; embed observations with the network the memory was made for.")
        with self._lock:  # the state is donated: no other thread may read it while this runs
            rewards, self._state = cluster_reward(self._state, embeddings, self.config)
            return np.asarray(rewards)

    def snapshot(self) -> dict:
        """The memory as a dict of numpy arrays, its fields by name (as a checkpoint stores it)."""
        with self._lock:
            return jax.tree.map(np.array, memory_fields(self._state))

    def restore(self, saved: Mapping) -> None:
        """Continues from a `snapshot` (e.g. read back from a checkpoint); raises SpecMismatchError unless
        it has this memory's fields and shapes."""
        with self._lock:
            self._state = memory_from_fields(saved, self._state)

    @property
    def atoms_in_use(self) -> int:
        """How many of the capacity's slots hold an atom."""
        with self._lock:
            return int(self._state.size)

    def counts(self) -> np.ndarray:
        """The atoms' visit counts [atoms_in_use] float32."""
        with self._lock:
            return np.asarray(self._state.counts[: int(self._state.size)])
