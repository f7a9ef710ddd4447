"""Writes the actor's batched RLDS steps as one TFDS dataset of whole episodes.

Input, once per tick: ``{"observation": [B, *obs], "action": [B, *act], "reward": [B],
"discount": [B], "is_first": [B], "is_last": [B], "is_terminal": [B], "extras": {name: [B, ...]}}``.
Each env's stream is split into episodes (is_first ... is_last); every finished episode becomes
one example ``{"steps": {field: [T+1, ...]}}`` written by `tfds.core.SequentialWriter`
(ArrayRecord or TFRecord shards, dataset_info.json, features.json), so
`tfds.builder_from_directory(out_dir)` and `rillet.datasets.rlds_reader` both load it.

Two ways to use it:

    with RldsWriter(out_dir, spec, env_id=..., policy_name=..., seed=...) as w:   # object
        for step in steps: w.write(step)                                         # close() on exit
    run(Stream(steps) | rlds_writer(out_dir, spec, env_id=..., ...))             # stage

The stage passes steps on and closes when its input ends (or the consumer stops iterating);
an exception upstream aborts the write. Crash safety: everything goes to a sibling temporary
directory ``<out_dir>.incomplete-<pid>-<hex>`` holding a RILLET_INCOMPLETE marker; only a clean
close() removes the marker and renames it atomically to out_dir. Episodes still running at
close() are dropped and counted in the card (``rillet_card.json``, also metadata.json). Episode
lengths and returns go to ``rillet_index-<split>.npz`` for the Grain loader (`rlds_loader`);
``max_episodes`` stops writing after that many episodes (later ones are counted, not written).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from rillet.datasets.rlds_loader import write_index
from rillet.datasets.rlds_reader import CARD_FILE, INCOMPLETE_INFIX, INCOMPLETE_MARKER, STEP_FIELDS
from rillet.datasets.specs import ArraySpec, StepSpec, check_batch
from rillet.errors import ConfigError, SpecMismatchError

DATASET_NAME = "rillet_rlds"
FILE_FORMATS = ("array_record", "tfrecord")


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
                 split: str = "train", flush_every: int = 32, max_episodes: int | None = None):
        import tensorflow_datasets as tfds

        if file_format not in FILE_FORMATS:
            raise ConfigError(f"file_format must be one of {FILE_FORMATS}, got {file_format!r}.")
        if max_episodes_per_shard < 1 or flush_every < 1:
            raise ConfigError("max_episodes_per_shard and flush_every must be >= 1, got "
                              f"{max_episodes_per_shard} and {flush_every}.")
        self.out_dir = os.path.abspath(os.fspath(out_dir))
        if os.path.exists(self.out_dir):
            raise ConfigError(f"'{self.out_dir}' already exists; rlds_writer never overwrites a dataset. "
                              "Choose a new out_dir or delete the old one.")
        self.spec, self.split, self.flush_every, self.max_episodes = spec, split, flush_every, max_episodes
        self.tmp_dir = f"{self.out_dir}{INCOMPLETE_INFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.makedirs(self.tmp_dir)
        with open(os.path.join(self.tmp_dir, INCOMPLETE_MARKER), "w") as f:
            f.write(f"Unfinished rlds_writer output for {self.out_dir}; safe to delete.\n")
        self.card: dict[str, Any] = {
            "format": "rillet.rlds/1", "env_id": env_id, "policy": policy_name, "seed": int(seed),
            "rillet_version": _rillet_version(), "file_format": file_format, "split": split,
            "spec": spec.to_json(),
        }
        self._info = tfds.core.DatasetInfo(
            builder=tfds.core.dataset_info.DatasetIdentity(
                name=DATASET_NAME, version=tfds.core.Version("1.0.0"), data_dir=self.tmp_dir, module_name=""),
            features=step_features(spec),
            description=(f"RLDS episodes of {env_id} from policy {policy_name!r} (seed {seed}), written by "
                         f"rillet {self.card['rillet_version']}; counts in {CARD_FILE} / metadata.json."),
            metadata=tfds.core.MetadataDict(),
        )
        self._writer = tfds.core.SequentialWriter(self._info, max_examples_per_shard=max_episodes_per_shard,
                                                  file_format=file_format)
        self._writer.initialize_splits([split])
        self._open: list[list[dict] | None] | None = None  # per env: steps of its running episode
        self._pending: list[dict] = []
        self._returns: list[float] = []
        self._lengths: list[int] = []
        self.num_steps = self.episodes_abandoned = self.steps_outside_episodes = self.episodes_over_limit = 0
        self.closed = False

    def write(self, step: Mapping[str, Any]) -> None:
        """Adds one batched step; finished episodes are queued and flushed every `flush_every`."""
        if self.closed:
            raise ConfigError("write() after close()/abort().")
        check_batch(self.spec.fields(), step, leading_dims=1, what="actor step")
        b = np.shape(step["is_first"])[0]
        if self._open is None:
            self._open = [None] * b
        elif b != len(self._open):
            raise SpecMismatchError(f"actor step has {b} environments; earlier steps had {len(self._open)}.")
        for i in range(b):
            one = {k: np.asarray(step[k][i]) for k in STEP_FIELDS}
            one["extras"] = {k: np.asarray(v[i]) for k, v in step["extras"].items()}
            if one["is_first"]:
                if self._open[i] is not None:
                    self.episodes_abandoned += 1  # a reset in mid-episode: its steps are dropped
                self._open[i] = []
            if self._open[i] is None:
                self.steps_outside_episodes += 1  # stream joined in mid-episode
                continue
            self._open[i].append(one)
            if one["is_last"]:
                self._finish(self._open[i])
                self._open[i] = None
        if len(self._pending) >= self.flush_every:
            self._flush()

    @property
    def num_episodes(self) -> int:
        """Episodes finished so far (written or queued)."""
        return len(self._lengths)

    def _finish(self, steps: list[dict]) -> None:
        if self.max_episodes is not None and len(self._lengths) >= self.max_episodes:
            self.episodes_over_limit += 1
            return
        stacked = {k: np.stack([s[k] for s in steps]) for k in STEP_FIELDS}
        if self.spec.extras:
            stacked["extras"] = {k: np.stack([s["extras"][k] for s in steps]) for k in self.spec.extras}
        self._pending.append({"steps": stacked})
        self._returns.append(float(stacked["reward"].sum()))
        self._lengths.append(len(steps))
        self.num_steps += len(steps)

    def _flush(self) -> None:
        if self._pending:
            self._writer.add_examples({self.split: self._pending})
            self._pending = []

    def close(self) -> dict:
        """Drops unfinished episodes, writes the card, renames to out_dir; returns the card."""
        if self.closed:
            return self.card
        self._flush()
        r = np.asarray(self._returns, np.float64)
        dropped = sum(ep is not None for ep in (self._open or []))
        self.card.update({
            "num_episodes": len(r), "num_steps": self.num_steps,
            "return_mean": float(r.mean()) if len(r) else None,
            "return_min": float(r.min()) if len(r) else None,
            "return_max": float(r.max()) if len(r) else None,
            "episodes_dropped_unfinished": dropped, "episodes_abandoned": self.episodes_abandoned,
            "steps_outside_episodes": self.steps_outside_episodes, "closed_unix": time.time(),
        })
        if self.max_episodes is not None:
            self.card["episodes_over_limit"] = self.episodes_over_limit
        self._info.metadata.update(self.card)
        self._writer.close_all()  # closes the shards and rewrites dataset_info.json + metadata
        write_index(self.tmp_dir, self.split, self._lengths, r)
        with open(os.path.join(self.tmp_dir, CARD_FILE), "w") as f:
            json.dump(self.card, f, indent=2, sort_keys=True)
        os.remove(os.path.join(self.tmp_dir, INCOMPLETE_MARKER))
        _fsync_dir(self.tmp_dir)
        os.rename(self.tmp_dir, self.out_dir)  # atomic on one filesystem; fails if out_dir appeared
        _fsync_dir(os.path.dirname(self.out_dir))
        self.closed = True
        return self.card

    def abort(self) -> None:
        """Discards everything written (the temporary directory); out_dir is never created."""
        if not self.closed:
            self.closed = True
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

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


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
