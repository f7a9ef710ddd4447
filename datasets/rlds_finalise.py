"""One way to build a TFDS dataset directory: crash-safe by construction, one shard-name template.

    with DatasetDraft(out_dir, "rillet_rlds", "array_record", per_shard=1000) as draft:
        shards = draft.split("train")                  # a ShardWriter
        shards.write(record, length, episode_return)   # serialized episodes, one at a time
        card = draft.commit(info, features, card)      # out_dir appears, complete

Everything goes to a sibling temporary directory ``<out_dir>.incomplete-<pid>-<hex>`` that holds a
RILLET_INCOMPLETE marker from its first moment. `commit` writes dataset_info.json (``info`` with
the splits and file format filled in), features.json, the episode index ``rillet_index-<split>.npz``
of every split, and the card (``rillet_card.json`` and TFDS's ``metadata.json``: ``card`` plus the
counts, the features and each file's digest) and its markdown (``README.md``, with a return
histogram ``rillet_returns.png``), then removes the marker and renames the directory to out_dir
atomically. A writer killed at any moment leaves only the marked temporary directory, which every reader refuses
(`rlds_reader.check_complete`); `discard` (or an exception inside ``with``) removes it.

Shards are named SHARD_TEMPLATE (``<name>-<split>.<format>-<index>``, the count is never needed, so
episodes can be streamed). Datasets written with another template (``...-<index>-of-<count>``, by
`rillet dataset` before, or by plain TFDS) still load: readers take the template from
dataset_info.json.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import uuid
from typing import Any

import numpy as np

from rillet import validation
from rillet.datasets.rlds_card import write_card_markdown
from rillet.datasets.rlds_integrity import split_files
from rillet.datasets.rlds_loader import write_index
from rillet.datasets.rlds_reader import (CARD_FILE, INCOMPLETE_INFIX, INCOMPLETE_MARKER, DatasetPathError,
                                         describe_features, shard_filename)
from rillet.errors import ConfigError

SHARD_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_INDEX}"
FILE_FORMATS = ("array_record", "tfrecord")


class ShardWriter:
    """Serialized episodes of one split -> shards of at most `per_shard` records (ArrayRecord with
    group_size 1, or TFRecord). Keeps each episode's length and return for the index and the card."""

    def __init__(self, directory: str, dataset: str, split: str, file_format: str, per_shard: int):
        self.directory, self.dataset, self.split = directory, dataset, split
        self.file_format, self.per_shard = file_format, per_shard
        self.shard_lengths: list[int] = []
        self.lengths: list[int] = []  # steps of each episode written
        self.returns: list[float] = []  # its undiscounted return
        self.num_bytes = 0
        self._writer: Any = None

    def write(self, record: bytes, length: int, episode_return: float) -> None:
        if self._writer is None:
            name = shard_filename(SHARD_TEMPLATE, self.dataset, self.split, self.file_format, len(self.shard_lengths))
            self._writer = _open_shard(os.path.join(self.directory, name), self.file_format)
            self.shard_lengths.append(0)
        self._writer.write(record)
        self.shard_lengths[-1] += 1
        self.num_bytes += len(record)
        self.lengths.append(int(length))
        self.returns.append(float(episode_return))
        if self.shard_lengths[-1] >= self.per_shard:
            self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def shard_names(self) -> list[str]:
        """The file names of the shards written so far, in order."""
        return [shard_filename(SHARD_TEMPLATE, self.dataset, self.split, self.file_format, i)
                for i in range(len(self.shard_lengths))]

    def split_info(self) -> dict:
        """This split's entry of dataset_info.json "splits" (TFDS's JSON of SplitInfo)."""
        return {"name": self.split, "numBytes": str(self.num_bytes), "filepathTemplate": SHARD_TEMPLATE,
                "shardLengths": [str(n) for n in self.shard_lengths]}


def _open_shard(path: str, file_format: str):
    if file_format == "array_record":
        from array_record.python.array_record_module import ArrayRecordWriter

        return ArrayRecordWriter(path, "group_size:1")
    import tensorflow as tf

    return tf.io.TFRecordWriter(path)


def check_version(owner: str, version: str, fix: str = "--version") -> str:
    """A dataset version as TFDS writes it ("MAJOR.MINOR.PATCH"); ConfigError otherwise."""
    validation.require(isinstance(version, str) and re.fullmatch(r"\d+\.\d+\.\d+", version) is not None, owner,
                       "version", version, 'a TFDS version "MAJOR.MINOR.PATCH", e.g. "1.0.0"', fix=fix)
    return version


def episode_counts(lengths, returns) -> dict:
    """The card's counts: num_episodes, num_steps, return_mean / return_min / return_max (None if empty)."""
    r = np.asarray(returns, np.float64)
    return {"num_episodes": len(r), "num_steps": int(np.sum(lengths, dtype=np.int64)),
            "return_mean": float(r.mean()) if len(r) else None,
            "return_min": float(r.min()) if len(r) else None, "return_max": float(r.max()) if len(r) else None}


def check_out_dir(out_dir: str, option: str = "out_dir") -> str:
    """The absolute path of a dataset to write, after checking nothing is there yet (no directory, file
    or link) and that its nearest existing ancestor is a directory this process can write in;
    DatasetPathError (a ConfigError) otherwise. `DatasetDraft` calls it; commands that do work before
    they open a draft (`rillet dataset generate` starts environments) call it first themselves."""
    path = os.path.abspath(os.fspath(out_dir))
    if os.path.lexists(path):
        kind = "directory" if os.path.isdir(path) else "file"
        raise DatasetPathError(f"{option} '{path}' already exists (a {kind}); a dataset is never overwritten. "
                               f"Choose a new {option} or delete the old one.")
    return validation.creatable_path(path, option, DatasetPathError)


def remove_dead_drafts(out_dir: str) -> list[str]:
    """Removes the marked drafts of out_dir (``<out_dir>.incomplete-<pid>-<hex>``) whose writer process no
    longer runs on this machine (killed earlier), so they do not pile up; returns what it removed. A
    draft of a live process (another writer now) is left alone."""
    removed = []
    for draft in glob.glob(glob.escape(out_dir + INCOMPLETE_INFIX) + "*"):
        pid = os.path.basename(draft)[len(os.path.basename(out_dir) + INCOMPLETE_INFIX):].split("-")[0]
        if pid.isdigit() and os.path.exists(os.path.join(draft, INCOMPLETE_MARKER)) and not _alive(int(pid)):
            shutil.rmtree(draft, ignore_errors=True)
            removed.append(draft)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class DatasetDraft:
    """A dataset under construction in a marked temporary directory (see the module docstring).

    out_dir: the final directory (must not exist; `check_out_dir`). name: the dataset name in
    dataset_info.json and the shard names. option: how the caller names out_dir in an error
    ("out_dir", "--out").
    """

    def __init__(self, out_dir: str, name: str, file_format: str, per_shard: int, *, option: str = "out_dir"):
        validation.one_of("DatasetDraft", "file_format", file_format, FILE_FORMATS)
        validation.integer("DatasetDraft", "per_shard", per_shard, low=1)
        self.out_dir = check_out_dir(out_dir, option)
        self.name, self.file_format, self.per_shard = name, file_format, per_shard
        remove_dead_drafts(self.out_dir)
        self.tmp_dir = f"{self.out_dir}{INCOMPLETE_INFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.makedirs(self.tmp_dir)
            with open(os.path.join(self.tmp_dir, INCOMPLETE_MARKER), "w") as f:
                f.write(f"Unfinished dataset for {self.out_dir}; safe to delete.\n")
        except OSError as e:  # what check_out_dir cannot see: a full disk, a quota, a race
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            raise DatasetPathError(f"{option} '{self.out_dir}' cannot be written: creating '{self.tmp_dir}' "
                                   f"failed ({e.strerror or e}). Choose a {option} in a writable directory "
                                   "with free space.") from None
        self.splits: dict[str, ShardWriter] = {}
        self.done = False

    def split(self, split: str) -> ShardWriter:
        """The shard writer of a new split."""
        if split in self.splits:
            raise ConfigError(f"split {split!r} of '{self.out_dir}' is already being written; name each split once.")
        self.splits[split] = ShardWriter(self.tmp_dir, self.name, split, self.file_format, self.per_shard)
        return self.splits[split]

    def commit(self, info: dict, features: dict, card: dict) -> dict:
        """Finishes the dataset and renames it to out_dir; returns the card as written (card, then
        file_format, the counts over all splits, "splits": {split: episodes}, "features" (every
        feature's type, shape, dtype, encoding) and "files" (per split: shard sizes and digests, the
        index digest; `rlds_integrity`)), also as markdown beside it (`rlds_card`)."""
        files = {}
        for shards in self.splits.values():
            shards.close()
            index = write_index(self.tmp_dir, shards.split, shards.lengths, shards.returns)
            files[shards.split] = split_files(self.tmp_dir, shards.shard_names(), os.path.basename(index),
                                              len(shards.lengths), sum(shards.lengths))
        lengths = [n for s in self.splits.values() for n in s.lengths]
        returns = [r for s in self.splits.values() for r in s.returns]
        card = {**card, "file_format": self.file_format, **episode_counts(lengths, returns),
                "splits": {s.split: len(s.lengths) for s in self.splits.values()},
                "features": describe_features(features), "files": files}
        info = {**info, "name": self.name, "fileFormat": self.file_format,
                "splits": [s.split_info() for s in self.splits.values()]}
        for fname, obj in (("dataset_info.json", info), ("features.json", features), (CARD_FILE, card),
                           ("metadata.json", card)):
            with open(os.path.join(self.tmp_dir, fname), "w") as f:
                json.dump(obj, f, indent=2, sort_keys=True)
        write_card_markdown(self.tmp_dir, card, {s.split: s.returns for s in self.splits.values()})
        os.remove(os.path.join(self.tmp_dir, INCOMPLETE_MARKER))
        _fsync_dir(self.tmp_dir)
        os.rename(self.tmp_dir, self.out_dir)  # atomic on one filesystem; fails if out_dir appeared
        _fsync_dir(os.path.dirname(self.out_dir))
        self.done = True
        return card

    def discard(self) -> None:
        """Removes the temporary directory; out_dir never appears."""
        if not self.done:
            self.done = True
            for shards in self.splits.values():
                shards.close()
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def __enter__(self) -> "DatasetDraft":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.done:
            self.discard()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
