"""Writes the actor's batched RLDS steps as one TFDS dataset of whole episodes.

Input, once per tick: ``{"observation": [B, *obs], "action": [B, *act], "reward": [B],
"discount": [B], "is_first": [B], "is_last": [B], "is_terminal": [B], "extras": {name: [B, ...]}}``.
Each tick is copied into a time-major buffer ([ticks, B, ...] per field); when env i's episode
(is_first ... is_last) ends, its rows are sliced out of that buffer at once and encoded as one
``tf.train.Example`` of the TFDS features ``{"steps": Dataset({field: Tensor})}`` (flat keys
``steps/<field>``, `rlds_encoding.encode_example`, the same proto tfds' serializer makes), written
to ArrayRecord (or TFRecord) shards; close() writes dataset_info.json / features.json as tfds does
(`rlds_finalise.DatasetDraft`), so `tfds.builder_from_directory(out_dir)` (as_data_source, as_dataset)
and `rillet.datasets.rlds_reader` both load it.

Two ways to use it:

    with RldsWriter(out_dir, spec, env_id=..., policy_name=..., seed=...) as w:   # object
        for step in steps: w.write(step)                                         # close() on exit
    run(Stream(steps) | rlds_writer(out_dir, spec, env_id=..., ...))             # stage

The stage passes steps on and closes when its input ends (or the consumer stops iterating);
an exception upstream aborts the write. Crash safety (`rlds_finalise.DatasetDraft`): everything goes
to a sibling temporary directory ``<out_dir>.incomplete-<pid>-<hex>`` holding a RILLET_INCOMPLETE
marker; only a clean close() removes the marker and renames it atomically to out_dir. Episodes still running at
close() are dropped and counted in the card (``rillet_card.json``, also metadata.json). Episode
lengths and returns go to ``rillet_index-<split>.npz`` for the Grain loader (`rlds_loader`);
``max_episodes`` stops writing after that many episodes (later ones are counted, not written).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from rillet import validation
from rillet.datasets.rlds_encoding import encode_example
from rillet.datasets.rlds_finalise import DatasetDraft, check_version
from rillet.datasets.rlds_reader import CARD_FILE, STEP_FIELDS
from rillet.datasets.specs import ArraySpec, StepSpec, check_batch
from rillet.errors import ConfigError, SpecMismatchError

DATASET_NAME = "rillet_rlds"


def step_features(spec: StepSpec):
    """`FeaturesDict({"steps": Dataset({...})})` for `spec` (extras only when the spec has any)."""
    import tensorflow_datasets as tfds

    def tensor(s: ArraySpec):
        return tfds.features.Tensor(shape=s.shape, dtype=s.np_dtype)

    fields = {k: tensor(v) for k, v in spec.fields().items() if k != "extras"}
    if spec.extras:  # an empty FeaturesDict would break tfds decoding
        fields["extras"] = tfds.features.FeaturesDict({k: tensor(v) for k, v in spec.extras.items()})
    return tfds.features.FeaturesDict({"steps": tfds.features.Dataset(fields)})


class RldsWriter:
    """Splits batched steps per env into episodes and writes them (see module docstring)."""

    def __init__(self, out_dir: str, spec: StepSpec, *, env_id: str, policy_name: str, seed: int,
                 file_format: str = "array_record", max_episodes_per_shard: int = 1000,
                 split: str = "train", flush_every: int = 32, max_episodes: int | None = None,
                 version: str = "1.0.0"):
        from google.protobuf import json_format

        validation.integer("RldsWriter", "max_episodes_per_shard", max_episodes_per_shard, low=1)
        validation.integer("RldsWriter", "flush_every", flush_every, low=1)
        self.spec, self.split, self.flush_every, self.max_episodes = spec, split, flush_every, max_episodes
        self._features = json_format.MessageToDict(step_features(spec).to_proto())  # features.json as tfds writes it
        self.card: dict[str, Any] = {
            "format": "rillet.rlds/1", "version": check_version("RldsWriter", version, "version"),
            "env_id": env_id, "policy": policy_name, "seed": int(seed),
            "rillet_version": _rillet_version(), "file_format": file_format, "split": split,
            "spec": spec.to_json(),
        }
        self._info = {"name": DATASET_NAME, "version": version, "description": (
            f"RLDS episodes of {env_id} from policy {policy_name!r} (seed {seed}), written by "
            f"rillet {self.card['rillet_version']}; counts in {CARD_FILE} / metadata.json.")}
        self._draft = DatasetDraft(out_dir, DATASET_NAME, file_format, max_episodes_per_shard)
        self.out_dir = self._draft.out_dir
        self._shards = self._draft.split(split)
        self._fields = {k: v for k, v in spec.fields().items() if k != "extras"}
        self._fields.update({f"extras/{k}": v for k, v in spec.extras.items()})
        self._ticks: dict[str, np.ndarray] = {}  # field -> [capacity, B, ...]: recent ticks, time-major
        self._rows = self._first_tick = self._tick = 0  # rows used; absolute tick of row 0; ticks seen
        self._start = np.zeros(0, np.int64)  # per env: absolute tick its running episode began, or -1
        self._signature: tuple | None = None  # shapes/dtypes of the last checked step
        self._pending: list[tuple[bytes, int, float]] = []  # finished episodes: (record, length, return)
        self.num_steps = self.episodes_abandoned = self.steps_outside_episodes = self.episodes_over_limit = 0
        self.closed = False

    def write(self, step: Mapping[str, Any]) -> None:
        """Adds one batched step; finished episodes are queued and flushed every `flush_every`."""
        if self.closed:
            raise ConfigError("write() after close()/abort().")
        try:
            arrays = {k: np.asarray(step[k]) for k in STEP_FIELDS}
            arrays.update({f"extras/{k}": np.asarray(step["extras"][k]) for k in self.spec.extras})
            signature = tuple((a.shape, a.dtype) for a in arrays.values())
        except (KeyError, TypeError):
            signature = None
        if signature is None or signature != self._signature:  # a new layout: check it in full
            check_batch(self.spec.fields(), step, leading_dims=1, what="actor step")
            self._check_envs({k: a.shape[0] for k, a in arrays.items()})
            self._signature = signature
        if self._rows == len(next(iter(self._ticks.values()))):
            self._make_room()
        for k, a in arrays.items():
            self._ticks[k][self._rows] = a
        self._rows += 1
        first, last, start = arrays["is_first"], arrays["is_last"], self._start
        if first.any():
            self.episodes_abandoned += int(np.count_nonzero(first & (start >= 0)))  # reset mid-episode
            start[first] = self._tick
        self.steps_outside_episodes += int(np.count_nonzero(start < 0))  # stream joined mid-episode
        if last.any():
            for i in np.flatnonzero(last & (start >= 0)):
                self._finish(int(i), int(start[i]))
                start[i] = -1
        self._tick += 1
        if len(self._pending) >= self.flush_every:
            self._flush()

    def _check_envs(self, rows: dict[str, int]) -> None:
        """Every field has the same number of envs as the first step (allocates the tick buffer)."""
        b = rows["is_first"]
        if self._ticks and b != len(self._start):
            raise SpecMismatchError(f"actor step has {b} environments; earlier steps had {len(self._start)}.")
        bad = {k: n for k, n in rows.items() if n != b}
        if bad:
            raise SpecMismatchError(f"actor step: fields {sorted(bad)} have {sorted(set(bad.values()))} rows, "
                                    f"is_first has {b}; every field needs one row per environment.")
        if not self._ticks:
            self._ticks = {k: np.empty((64, b) + s.shape, s.np_dtype) for k, s in self._fields.items()}
            self._start = np.full(b, -1, np.int64)

    def _make_room(self) -> None:
        """Drops ticks before every running episode; doubles the buffer if that frees nothing."""
        running = self._start[self._start >= 0]
        drop = (int(running.min()) if len(running) else self._tick) - self._first_tick
        if drop:
            for buf in self._ticks.values():
                buf[:self._rows - drop] = buf[drop:self._rows]
            self._rows -= drop
            self._first_tick += drop
        if self._rows == len(next(iter(self._ticks.values()))):
            self._ticks = {k: np.concatenate([buf, np.empty_like(buf)]) for k, buf in self._ticks.items()}

    @property
    def num_episodes(self) -> int:
        """Episodes finished so far (written or queued)."""
        return len(self._shards.lengths) + len(self._pending)

    def _finish(self, env: int, start: int) -> None:
        """Encodes env's episode from tick `start` to the current tick."""
        if self.max_episodes is not None and self.num_episodes >= self.max_episodes:
            self.episodes_over_limit += 1
            return
        rows = slice(start - self._first_tick, self._rows)
        steps = {k: np.ascontiguousarray(buf[rows, env]) for k, buf in self._ticks.items()}
        record = encode_example({f"steps/{k}": v for k, v in steps.items()})
        self._pending.append((record, len(steps["reward"]), float(steps["reward"].sum())))
        self.num_steps += len(steps["reward"])

    def _flush(self) -> None:
        for episode in self._pending:
            self._shards.write(*episode)
        self._pending = []

    def close(self) -> dict:
        """Drops unfinished episodes, writes the card, renames to out_dir; returns the card."""
        if self.closed:
            return self.card
        self._flush()
        card = {**self.card, "episodes_dropped_unfinished": int(np.count_nonzero(self._start >= 0)),
                "episodes_abandoned": self.episodes_abandoned, "steps_outside_episodes": self.steps_outside_episodes,
                "closed_unix": time.time()}
        if self.max_episodes is not None:
            card["episodes_over_limit"] = self.episodes_over_limit
        self.card = self._draft.commit(self._info, self._features, card)
        self.closed = True
        return self.card

    def abort(self) -> None:
        """Discards everything written (the temporary directory); out_dir is never created."""
        if not self.closed:
            self.closed = True
            self._draft.discard()

    def __enter__(self) -> "RldsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def rlds_writer(out_dir: str, spec: StepSpec, **kwargs) -> Callable[[Iterator], Iterator]:
    """Stage: writes each batched step (see RldsWriter for kwargs) and passes it on.

    Closes when the input is exhausted or the consumer stops (GeneratorExit); aborts on an
    exception. The closed writer is available as ``stage.writer`` (its ``card``) once started.
    """

    def stage(it: Iterator) -> Iterator:
        writer = stage.writer = RldsWriter(out_dir, spec, **kwargs)
        try:
            for step in it:
                writer.write(step)
                yield step
        except GeneratorExit:
            writer.close()
            raise
        except BaseException:
            writer.abort()
            raise
        writer.close()

    stage.writer = None
    return stage


def _rillet_version() -> str:
    import rillet

    return rillet.__version__
