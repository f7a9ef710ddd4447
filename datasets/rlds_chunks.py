"""Chunks: the Grain record unit of the RLDS loader (many records, built from whole episodes at once).

Per epoch e, for one shard s of S:

    order     kept episodes in a permutation seeded by (seed, e) (identity when shuffle=False), each
              contributing its N_i records in order (transitions by t, windows by start)
    shard     records [s * (N // S), (s + 1) * (N // S)) of that order (N = sum N_i; remainder dropped)
    chunk c   records [c * size, (c + 1) * size) of the shard's slice, permuted with (seed, e, s, c)

`ChunkSource[e * chunks_per_epoch + c]` reads the chunk's episodes (an episode cut by a chunk
boundary is read by both chunks), decodes them into columns with one numpy pass per field
(`rlds_transforms.decode_columns`) and gathers every record vectorised (`rlds_transforms.gather`):
a dict of arrays with leading axis n <= size (the last chunk of an epoch may be short).
`ChunkSampler` hands out chunk keys 0, 1, ... for `num_epochs` epochs (None: forever).
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from rillet.datasets import rlds_transforms as T
from rillet.errors import ConfigError

CHUNK_BYTES = 16 << 20  # the most decoded record bytes one chunk holds (caps `shuffle_buffer`)


def chunk_size(records, batch_size: int, shuffle_buffer: int) -> int:
    """Records per chunk: `shuffle_buffer` capped at CHUNK_BYTES, in whole batches (>= one batch)."""
    nbytes = {k: math.prod(s.shape) * s.np_dtype.itemsize for k, s in records.episodes.layout.items()}
    step = sum(nbytes.values())
    obs = sum(v for k, v in nbytes.items() if k == "observation" or k.startswith("observation/"))
    size = records.window * (step + 1) if records.transform == "windows" else step + obs
    want = min(int(shuffle_buffer), max(1, CHUNK_BYTES // max(size, 1)))
    return max(1, want // batch_size) * batch_size


class ChunkPlan:
    """Which records each chunk holds (see module docstring). counts [K]: records per kept episode."""

    def __init__(self, counts: np.ndarray, size: int, shard_index: int, shard_count: int, shuffle: bool,
                 seed: int):
        if not 0 <= shard_index < shard_count:
            raise ConfigError(f"shard_index must be in [0, shard_count), got {shard_index} of {shard_count}.")
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}.")
        self.counts, self.size = np.asarray(counts, np.int64), int(size)
        self.shard_index, self.shard_count, self.shuffle, self.seed = shard_index, shard_count, shuffle, seed
        self.per_shard = int(self.counts.sum()) // shard_count
        self.chunks_per_epoch = -(-self.per_shard // self.size)
        self._epoch: tuple[int, np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(perm [K] episode positions in epoch order, cum [K+1] record offsets along perm)."""
        with self._lock:
            if self._epoch is None or self._epoch[0] != epoch:
                k = len(self.counts)
                perm = (np.random.default_rng([self.seed, epoch]).permutation(k) if self.shuffle
                        else np.arange(k))
                self._epoch = (epoch, perm, np.concatenate([[0], np.cumsum(self.counts[perm])]))
            return self._epoch[1], self._epoch[2]

    def chunk(self, epoch: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(episodes [m] positions into the kept episodes, ep [n] index into them, k [n] record in episode)."""
        perm, cum = self.order(epoch)
        lo = self.shard_index * self.per_shard + c * self.size
        hi = min(lo + self.size, (self.shard_index + 1) * self.per_shard)
        g = np.arange(lo, hi)
        if self.shuffle:
            g = np.random.default_rng([self.seed, epoch, self.shard_index, c]).permutation(g)
        pos = np.searchsorted(cum, g, side="right") - 1
        first = int(np.searchsorted(cum, lo, side="right")) - 1
        last = int(np.searchsorted(cum, hi, side="left"))
        return perm[first:last], pos - first, g - cum[pos]

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_epoch")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _epoch=None, _lock=threading.Lock())


class ChunkSource:
    """Grain data source: key e * chunks_per_epoch + c -> the chunk's records, {field: [n, ...]}.

    `records` is an `rlds_loader.RldsRecords` (episodes, lengths, kept, transform arguments).
    """

    def __init__(self, records, plan: ChunkPlan):
        self.records, self.plan = records, plan

    def __len__(self) -> int:
        return self.plan.chunks_per_epoch

    def __getitem__(self, key: int) -> dict:
        from rillet.datasets.rlds_loader import _records

        r = self.records
        epoch, c = divmod(int(key), self.plan.chunks_per_epoch)
        positions, ep, k = self.plan.chunk(epoch, c)
        ids = r.kept[positions]
        lengths = r.lengths[ids]
        cols = T.decode_columns(_records(r.episodes, ids), r.episodes.layout, lengths, r.path,
                                r.episodes.episode_layout)
        off = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        if r.derive is not None:
            cols = r.derive(cols, off)
        return T.gather(cols, off, lengths, ep, k, r.transform, n=r.n, gamma=r.gamma, window=r.window,
                        stride=r.stride)

    def __repr__(self) -> str:  # grain checks it on set_state: a state only fits the same plan
        p = self.plan
        return (f"ChunkSource({self.records!r}, chunk={p.size}, shard={p.shard_index}/{p.shard_count}, "
                f"shuffle={p.shuffle}, seed={p.seed})")


class ChunkSampler:
    """Grain sampler over chunk keys: index i -> key i, for num_epochs * chunks_per_epoch keys."""

    def __init__(self, chunks_per_epoch: int, num_epochs: int | None):
        self.chunks_per_epoch, self.num_epochs = chunks_per_epoch, num_epochs
        self._max = None if num_epochs is None else num_epochs * chunks_per_epoch

    def __getitem__(self, index: int) -> Any:
        from grain.python import RecordMetadata

        if index < 0 or (self._max is not None and index >= self._max):
            raise IndexError(f"chunk {index} out of range [0, {self._max}).")
        return RecordMetadata(index=index, record_key=index)

    def __repr__(self) -> str:
        return f"ChunkSampler(chunks_per_epoch={self.chunks_per_epoch}, num_epochs={self.num_epochs})"
