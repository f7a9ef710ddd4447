"""`rlds(path, ...)`: a Grain loader over an RLDS dataset (random access to ArrayRecord, no TF).

    it = rlds("/data/cartpole", transform="windows", window=32, batch_size=64, seed=0)
    batch = next(it)     # {"steps": {"observation": [64, 32, 4], ...}, "mask": [64, 32]}
    state = it.get_state(); ...; it.set_state(state)   # resume mid-epoch, exactly

Records are transitions ([B, ...] per field plus next_observation), n-step transitions or padded
windows. Which records an episode yields follows from the episode lengths alone, read from the
small index file the writer leaves (``rillet_index-<split>.npz``: lengths [E], returns [E]) or,
for datasets without one (plain TFDS RLDS), from one streaming pass over the records.
`RldsRecords` gives random access to single records (a reference, and `inspect`'s index). The
loader's Grain record is a chunk of records (`rlds_chunks`): its episodes are decoded once, all
its records gathered with numpy, and `RldsIterator` cuts batches from it; memory is bounded by
the loader's buffers, not by the dataset. Grain runs the chunks (epochs, `worker_count`
processes, prefetch threads); sharding by JAX process is in the chunk plan.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from rillet.datasets import rlds_transforms as T
from rillet.datasets.rlds_integrity import check_split
from rillet.datasets.rlds_reader import CorruptDatasetError, RldsEpisodes
from rillet.datasets.specs import StepSpec
from rillet.errors import ConfigError

INDEX_FILE = "rillet_index-{split}.npz"
SPOT_CHECKS = 8  # shards (evenly spread) whose first episode is decoded against the index at every open


def write_index(path: str, split: str, lengths, returns) -> str:
    """Writes the per-episode index (lengths [E] int64, returns [E] float64) for `split`."""
    out = os.path.join(path, INDEX_FILE.format(split=split))
    with open(out, "wb") as f:
        np.savez(f, lengths=np.asarray(lengths, np.int64), returns=np.asarray(returns, np.float64))
    return out


def open_episodes(path: str, split: str, spec: StepSpec | None) -> RldsEpisodes:
    """RldsEpisodes, after checking every shard opens and holds the records dataset_info.json lists,
    and that the files agree with what the card records of them (`rlds_integrity.check_split`)."""
    try:
        episodes = RldsEpisodes(path, split, spec)
    except RuntimeError:  # grain's ArrayRecordDataSource on an unreadable shard
        _check_shards(path, split)
        raise
    shards = _check_shards(path, split)
    check_split(path, split, episodes.card, episodes.layout, shards, len(episodes))
    return episodes


def _check_shards(path: str, split: str) -> list[str]:
    """The split's shard paths, after checking each opens and holds the records dataset_info.json lists."""
    import json

    from array_record.python.array_record_module import ArrayRecordReader

    from rillet.datasets.rlds_reader import _shard_paths, shard_lengths

    with open(os.path.join(path, "dataset_info.json")) as f:
        info = json.load(f)
    want = shard_lengths(info, split)
    shards = _shard_paths(path, info, split)
    for shard, n in zip(shards, want):
        try:
            reader = ArrayRecordReader(shard)
            got = reader.num_records()
            reader.close()
        except Exception as e:  # array_record raises RuntimeError/ValueError with C++ status text
            raise CorruptDatasetError(f"shard '{shard}' cannot be read ({str(e)[:200]}); it is truncated or "
                                      "corrupt. Restore it from the source, or regenerate the dataset.") from None
        if got != n:
            raise CorruptDatasetError(f"shard '{shard}' holds {got} records but dataset_info.json lists {n}; "
                                      "it is truncated or was replaced. Regenerate the dataset.")
    return shards


def read_index(episodes: RldsEpisodes) -> tuple[np.ndarray, np.ndarray]:
    """(lengths [E] int64, returns [E] float64): the index file (checked against the first episode of
    up to SPOT_CHECKS shards spread over the split), else one pass over the records."""
    index = os.path.join(episodes.path, INDEX_FILE.format(split=episodes.split))
    if os.path.exists(index):
        with np.load(index) as z:
            lengths, returns = z["lengths"], z["returns"]
        if len(lengths) != len(episodes):
            raise CorruptDatasetError(f"'{index}' lists {len(lengths)} episodes but the shards hold "
                                      f"{len(episodes)}; delete the index file to rebuild it.")
        starts = episodes.shard_starts[episodes.shard_starts < len(episodes)]
        for i in starts[np.unique(np.linspace(0, len(starts) - 1, min(len(starts), SPOT_CHECKS)).astype(int))]:
            length, ret = _length_and_return(episodes, int(i))
            if length != lengths[i] or not np.isclose(ret, returns[i], equal_nan=True):
                raise CorruptDatasetError(
                    f"episode {i} of '{episodes.path}' ({episodes.split}) has {length} steps and return {ret:g}, but "
                    f"'{index}' says {lengths[i]} and {returns[i]:g}: a shard or the index was replaced. Run `rillet "
                    f"dataset validate {episodes.path}`; delete the index file if only it is wrong.")
        return lengths, returns
    lengths, returns = np.zeros(len(episodes), np.int64), np.zeros(len(episodes), np.float64)
    for i in range(len(episodes)):
        lengths[i], returns[i] = _length_and_return(episodes, i)
    return lengths, returns


def _length_and_return(episodes: RldsEpisodes, i: int) -> tuple[int, float]:
    """Episode i's steps and undiscounted return, decoding only is_first and reward (never images)."""
    index = {k: episodes.layout[k] for k in ("is_first", "reward")}
    steps = T.decode_episode(_record(episodes, i), index, episodes.path)
    return len(steps["is_first"]), float(steps["reward"].sum(dtype=np.float64))


def episode_metadata(episodes: RldsEpisodes, batch: int = 256) -> list[dict]:
    """[E] per-episode metadata trees ({"episode_metadata": {"id": value, ...}}; {} when the dataset
    has none), from one pass over the records."""
    out: list[dict] = []
    if not episodes.episode_layout:
        return [{} for _ in range(len(episodes))]
    for lo in range(0, len(episodes), batch):
        ids = range(lo, min(lo + batch, len(episodes)))
        cols = T.decode_columns(_records(episodes, ids), {}, np.ones(len(ids), np.int64), episodes.path,
                                episodes.episode_layout)["episode"]
        out += [T.tree_map(lambda x, j=j: x[j], cols) for j in range(len(ids))]
    return out


def _record(episodes: RldsEpisodes, i: int) -> bytes:
    return _records(episodes, [int(i)])[0]


def _records(episodes: RldsEpisodes, ids) -> list[bytes]:
    """Serialized episodes `ids`, read one by one (array_record's batched __getitems__ keeps
    per-reader buffers that grow RSS by about the dataset size)."""
    try:
        return [episodes.source[int(i)] for i in ids]
    except Exception as e:
        raise CorruptDatasetError(f"an episode of {list(ids[:5])}... in '{episodes.path}' cannot be read "
                                  f"({str(e)[:200]}); a shard is corrupt. Regenerate or re-download the "
                                  "dataset.") from None


class RldsRecords:
    """Grain RandomAccessDataSource of transformed records (transitions, n-step or windows).

    len() = records over the kept episodes; [i] = one record dict of numpy arrays (no batch axis).
    Attributes: episodes (RldsEpisodes), lengths/returns [E], kept [K] episode ids, offsets [K+1].
    """

    def __init__(self, path: str, split: str = "train", *, transform: str = "transitions", n: int = 3,
                 gamma: float = 0.99, window: int = 16, stride: int | None = None, pad: bool = True,
                 every_start: bool = False, min_return: float | None = None, spec: StepSpec | None = None,
                 derive: Callable[[dict, np.ndarray], dict] | None = None,
                 episode_filter: Callable[[dict], bool] | None = None):
        T.check_transform(transform, n=n, gamma=gamma, window=window, stride=stride)
        self.path, self.split, self.derive = os.fspath(path), split, derive
        self.transform, self.n, self.gamma = transform, n, gamma
        self.window, self.stride, self.pad = window, (window if stride is None else stride), pad
        self.episodes = open_episodes(self.path, split, spec)
        if len(self.episodes) == 0:
            raise ConfigError(f"split {split!r} of '{self.path}' holds no episodes; nothing to load. Generate "
                              "more data or pick another split.")
        self.lengths, self.returns = read_index(self.episodes)
        keep = np.ones(len(self.lengths), bool) if min_return is None else self.returns >= min_return
        if not keep.any():
            raise ConfigError(f"no episode of '{self.path}' ({split}) has return >= {min_return}; returns "
                              f"range {self.returns.min():g}..{self.returns.max():g}.")
        if episode_filter is not None:
            keep &= np.array([bool(episode_filter(m)) for m in episode_metadata(self.episodes)], bool)
            if not keep.any():
                raise ConfigError(f"episode_filter keeps no episode of '{self.path}' ({split}).")
        if transform == "windows" and not every_start and window > self.lengths[keep].max():
            raise ConfigError(f"window={window} is longer than every episode of '{self.path}' ({split}; "
                              f"longest {int(self.lengths[keep].max())} steps). Use a shorter window.")
        counts = T.record_counts(self.lengths, transform, window, self.stride, pad, every_start) * keep
        self.kept = np.flatnonzero(counts)
        self.offsets = np.concatenate([[0], np.cumsum(counts[self.kept])])
        if self.offsets[-1] == 0:
            raise ConfigError(f"'{self.path}' ({split}) yields no {transform} records (episodes of one step).")

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """Record index -> (episode id, step t or window start)."""
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} out of range [0, {len(self)}).")
        j = int(np.searchsorted(self.offsets, index, side="right")) - 1
        k = int(index - self.offsets[j])
        return int(self.kept[j]), k * self.stride if self.transform == "windows" else k

    def __getitem__(self, index: int) -> dict:
        episode, k = self.locate(int(index))
        steps = T.decode_episode(_record(self.episodes, episode), self.episodes.layout, self.path,
                                 self.episodes.episode_layout)
        if self.derive is not None:
            steps = self.derive(steps, np.zeros(1, np.int64))
        if self.transform == "transitions":
            return T.transition(steps, k)
        if self.transform == "nstep":
            return T.nstep(steps, k, self.n, self.gamma)
        return T.window(steps, k, self.window)

    def __repr__(self) -> str:  # grain puts the source's repr into checkpoint states
        return (f"RldsRecords(path={self.path!r}, split={self.split!r}, transform={self.transform!r}, "
                f"records={len(self)})")


class RldsIterator:
    """Batches cut from the loader's chunks, in order; get_state()/set_state() resume exactly.

    The state is the grain iterator's state before the chunk in hand plus the batches already
    taken from it; set_state re-reads that chunk and skips them. Batches never span two chunks.
    """

    def __init__(self, loader: Any, batch_size: int, drop_remainder: bool):
        self._it, self._batch, self._drop = iter(loader), batch_size, drop_remainder
        self._chunk, self._before, self._pos, self._n, self._skip = None, b"", 0, 0, 0

    def __iter__(self) -> "RldsIterator":
        return self

    def __next__(self) -> dict:
        while self._chunk is None or self._pos >= self._n:
            self._chunk = None
            before = self._it.get_state()
            chunk = next(self._it)  # StopIteration: the sampler's epochs are done
            n = len(chunk["mask"] if "mask" in chunk else chunk["reward"])
            self._n = n - n % self._batch if self._drop else n
            self._chunk, self._before = chunk, before
            self._pos, self._skip = self._skip * self._batch, 0
        lo, self._pos = self._pos, min(self._pos + self._batch, self._n)
        return _slice(self._chunk, lo, self._pos)

    def get_state(self) -> bytes:
        """JSON bytes: {"grain": the DataLoader iterator's state, "batches": taken from its next chunk}."""
        import json

        if self._chunk is None or self._pos >= self._n:
            grain_state, taken = self._it.get_state(), self._skip
        else:
            grain_state, taken = self._before, -(-self._pos // self._batch)
        return json.dumps({"grain": grain_state.decode(), "batches": taken}).encode()

    def set_state(self, state: bytes) -> None:
        import json

        s = json.loads(state.decode())
        self._it.set_state(s["grain"].encode())
        self._chunk, self._pos, self._n, self._skip = None, 0, 0, int(s["batches"])


def _slice(tree: Any, lo: int, hi: int) -> Any:
    if isinstance(tree, dict):
        return {k: _slice(v, lo, hi) for k, v in tree.items()}
    return tree[lo:hi]


class RldsLoader:
    """Iterable of batches (each iter() starts from the beginning); `records` is the RldsRecords,
    `plan` the rlds_chunks.ChunkPlan, `grain_loader` the grain.python.DataLoader of chunks."""

    def __init__(self, grain_loader: Any, records: RldsRecords, plan: Any, batch_size: int, drop_remainder: bool):
        self.grain_loader, self.records, self.plan = grain_loader, records, plan
        self.batch_size, self.drop_remainder = batch_size, drop_remainder

    def __iter__(self) -> RldsIterator:
        return RldsIterator(self.grain_loader, self.batch_size, self.drop_remainder)


def rlds_loader(path: str, *, split: str = "train", transform: str = "transitions", batch_size: int = 32,
                seed: int = 0, shuffle: bool = True, num_epochs: int | None = 1, worker_count: int = 0,
                worker_buffer_size: int = 2, n: int = 3, gamma: float = 0.99, window: int = 16,
                stride: int | None = None, pad: bool = True, every_start: bool = False,
                min_return: float | None = None,
                spec: StepSpec | None = None, derive: Callable[[dict, np.ndarray], dict] | None = None,
                episode_filter: Callable[[dict], bool] | None = None, drop_remainder: bool = True,
                shard_index: int | None = None,
                shard_count: int | None = None, read_threads: int = 16, prefetch: int = 500,
                shuffle_buffer: int = 16384) -> RldsLoader:
    """The loader (iterable; see `rlds` for the arguments)."""
    import grain.python as grain

    from rillet.datasets.rlds_chunks import ChunkPlan, ChunkSampler, ChunkSource, chunk_size

    if batch_size < 1 or worker_count < 0 or shuffle_buffer < 1:
        raise ConfigError("batch_size and shuffle_buffer must be >= 1 and worker_count >= 0, got "
                          f"{batch_size}, {shuffle_buffer} and {worker_count}.")
    if num_epochs is not None and num_epochs < 1:
        raise ConfigError(f"num_epochs must be >= 1 or None, got {num_epochs}.")
    records = RldsRecords(path, split, transform=transform, n=n, gamma=gamma, window=window, stride=stride,
                          pad=pad, every_start=every_start, min_return=min_return, spec=spec, derive=derive,
                          episode_filter=episode_filter)
    if shard_index is None or shard_count is None:
        import jax

        shard_index, shard_count = jax.process_index(), jax.process_count()
    size = chunk_size(records, batch_size, shuffle_buffer)
    plan = ChunkPlan(np.diff(records.offsets), size, shard_index, shard_count, shuffle, seed)
    if plan.per_shard == 0 or (num_epochs is None and drop_remainder and plan.per_shard < batch_size):
        raise ConfigError(f"'{records.path}' ({split}) yields {len(records)} {transform} records: "
                          f"{plan.per_shard} per shard of {shard_count}, too few for a batch of {batch_size}.")
    chunks = max(1, -(-prefetch // size))
    loader = grain.DataLoader(data_source=ChunkSource(records, plan),
                              sampler=ChunkSampler(plan.chunks_per_epoch, num_epochs),
                              worker_count=worker_count, worker_buffer_size=worker_buffer_size,
                              shard_options=grain.NoSharding(),
                              read_options=grain.ReadOptions(num_threads=max(1, min(read_threads, chunks)),
                                                             prefetch_buffer_size=chunks))
    return RldsLoader(loader, records, plan, batch_size, drop_remainder)


def rlds(path: str, **kwargs) -> RldsIterator:
    """Batches of records of the RLDS dataset at `path`: an iterator with get_state()/set_state().

    transform: "transitions" -> observation [B, *obs], action [B, *act], reward [B], discount [B],
      next_observation [B, *obs], is_terminal [B], extras {name: [B, ...]};
      "nstep" (n, gamma) -> the same with n-step reward and bootstrap discount gamma^m * prod d;
      "windows" (window, stride=window, pad, every_start) -> {"steps": {field: [B, window, ...]},
      "mask": [B, window]}; starts as `rlds_transforms.record_counts` says.
    split, min_return (keep episodes with return >= it), spec (checked against the features),
    derive (steps {field: [N, ...]}, episode offsets [E]) -> steps: adds columns computed from whole
    episodes (e.g. the previous action) before records are cut; a module-level function (workers pickle it),
    episode_filter (episode metadata {"episode_metadata": {...}} -> keep?; read in one pass at start),
    batch_size, drop_remainder, seed, shuffle, num_epochs (None: forever), worker_count (processes;
    0: in this one), shard_index/shard_count (default: jax.process_index()/process_count()).

    Shuffling (see rlds_chunks): each epoch permutes the episodes (seed, epoch), each shard takes
    its equal slice of their records, and records are shuffled within chunks of `shuffle_buffer`
    records (whole batches, at most ~16 MB decoded), so a batch mixes up to shuffle_buffer / N_i
    episodes. A chunk decodes its episodes once; batches never span chunks, so each epoch drops
    (drop_remainder) or shortens its last batch. Memory ~ (prefetch records, rounded up to whole
    chunks, read by read_threads threads) + worker_buffer_size chunks per worker + one chunk.
    """
    return iter(rlds_loader(path, **kwargs))
