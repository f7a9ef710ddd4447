"""`rillet dataset validate DIR`: every file of a dataset read and checked against the others.

    findings = validate_dataset("/data/cartpole")       # [Finding(check, ok, detail), ...]
    all(f.ok for f in findings)

What is checked, per split (ArrayRecord or TFRecord): every shard listed in dataset_info.json exists,
reads to its end and holds the records its shardLengths say; its size and SHA-256 equal the card's
(`rlds_integrity`); every record decodes with features.json (every feature, images included) into a
whole episode (is_first at its first step only, is_last at its last only, is_terminal nowhere else);
the episode index holds those episodes' lengths and returns, and its digest is the card's. Over the
dataset: the card's features, spec, counts (episodes, steps, returns, per split) and version agree
with what was read. Datasets without a card (tfds's, rlds's) get the checks that need none.

A full pass over the data: it costs what one epoch of reading costs. The loader makes the cheap subset
of these checks each time it opens a split (`rlds_integrity.check_split`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterator, Mapping

import numpy as np

from rillet.datasets import rlds_transforms as T
from rillet.datasets.rlds_finalise import episode_counts
from rillet.datasets.rlds_integrity import card_problems, file_sha256
from rillet.datasets.rlds_loader import INDEX_FILE
from rillet.datasets.rlds_reader import _shard_paths, check_complete, read_card, read_features, shard_lengths
from rillet.errors import RilletError

SHOWN = 3  # problems listed per check; the rest are counted


@dataclasses.dataclass(frozen=True)
class Finding:
    """One check's outcome: which check (and split), whether it passed, what was found."""

    check: str
    ok: bool
    detail: str


@dataclasses.dataclass
class _Split:
    """What one pass over a split's shards found: episode lengths [E] and returns [E], problems."""

    lengths: list = dataclasses.field(default_factory=list)
    returns: list = dataclasses.field(default_factory=list)
    problems: dict = dataclasses.field(default_factory=dict)  # check -> [messages]

    def fail(self, check: str, message: str) -> None:
        self.problems.setdefault(check, []).append(message)


def shard_records(shard: str, file_format: str) -> Iterator[bytes]:
    """The serialized records of one ArrayRecord or TFRecord shard, in order (TensorFlow only for TFRecord)."""
    if file_format == "array_record":
        from array_record.python.array_record_module import ArrayRecordReader

        reader = ArrayRecordReader(shard)
        try:
            for i in range(reader.num_records()):
                yield reader.read([i])[0]
        finally:
            reader.close()
    else:
        import tensorflow as tf

        for record in tf.data.TFRecordDataset(shard):
            yield record.numpy()


def validate_dataset(path: str) -> list[Finding]:
    """Every check of the module docstring on the dataset at `path`; one Finding per check and split."""
    path = os.path.abspath(path)
    try:
        check_complete(path)
        with open(os.path.join(path, "dataset_info.json")) as f:
            info = json.load(f)
        layout, episode_layout, _ = read_features(path)
    except (OSError, ValueError, RilletError) as e:
        return [Finding("metadata", False, f"{e}")]
    card = read_card(path)
    findings = [Finding("metadata", True, f"dataset_info.json and features.json read: {len(layout)} step features, "
                        f"{len(episode_layout)} episode features, format {info.get('fileFormat', 'tfrecord')}")]
    problems = card_problems(path, card, layout) if card else []
    findings.append(Finding("card features", not problems, "; ".join(problems) if problems else
                            ("the card's features and spec match features.json" if card else "no card (skipped)")))
    counted = {}
    for split in [s["name"] for s in info.get("splits", [])]:
        counted[split] = _read_split(path, info, split, layout, episode_layout, card.get("files", {}).get(split))
        findings += _split_findings(split, counted[split])
    return findings + _card_counts(card, info, counted)


def _read_split(path: str, info: Mapping, split: str, layout, episode_layout, files: Mapping | None) -> _Split:
    """One pass over `split`: shards (counts, sizes, digests), episodes (decoded whole), the index."""
    out = _Split()
    try:
        shards = _shard_paths(path, info, split)
    except RilletError as e:
        out.fail("shards", str(e))
        return out
    want = shard_lengths(info, split)
    recorded = (files or {}).get("shards", [])
    if files and len(recorded) != len(shards):
        out.fail("digests", f"the card records {len(recorded)} shards, dataset_info.json lists {len(shards)}")
    for i, shard in enumerate(shards):
        if files and i < len(recorded):
            _check_digest(out, shard, recorded[i])
        n = 0
        try:
            for n, record in enumerate(shard_records(shard, info.get("fileFormat", "tfrecord")), start=1):
                _check_episode(out, record, layout, episode_layout, f"{os.path.basename(shard)} record {n - 1}")
        except Exception as e:  # array_record / tf.data raise their own types with the C++ status text
            out.fail("shards", f"{os.path.basename(shard)} cannot be read after {n} records ({str(e)[:160]})")
            continue
        if n != want[i]:
            out.fail("shards", f"{os.path.basename(shard)} holds {n} records, dataset_info.json lists {want[i]}")
    _check_index(out, path, split, files)
    return out


def _check_digest(out: _Split, shard: str, recorded: Mapping) -> None:
    name, size = os.path.basename(shard), os.path.getsize(shard)
    if size != recorded["bytes"] or file_sha256(shard) != recorded["sha256"]:  # shards are matched by position
        out.fail("digests", f"{name} ({size} bytes) is not the shard the card records ({recorded['file']}, "
                            f"{recorded['bytes']} bytes, sha256 {recorded['sha256'][:12]}...)")


def _check_episode(out: _Split, record: bytes, layout, episode_layout, where: str) -> None:
    """Decodes one record with every feature and checks it is one whole episode."""
    try:
        steps = T.decode_episode(record, layout, where, episode_layout)
    except (RilletError, ValueError) as e:
        out.fail("episodes", f"{where} does not decode with features.json ({str(e)[:200]})")
        return
    first, last = np.asarray(steps["is_first"], bool), np.asarray(steps["is_last"], bool)
    terminal = np.asarray(steps["is_terminal"], bool)
    if not (first[0] and not first[1:].any() and last[-1] and not last[:-1].any() and not terminal[:-1].any()):
        out.fail("episodes", f"{where} is not one whole episode (is_first at steps {np.flatnonzero(first).tolist()}, "
                             f"is_last at {np.flatnonzero(last).tolist()}, is_terminal at "
                             f"{np.flatnonzero(terminal).tolist()} of {len(first)})")
    out.lengths.append(len(first))
    out.returns.append(float(np.sum(steps["reward"], dtype=np.float64)))


def _check_index(out: _Split, path: str, split: str, files: Mapping | None) -> None:
    """The episode index against the episodes just read, and its digest against the card's."""
    index = os.path.join(path, INDEX_FILE.format(split=split))
    if not os.path.exists(index):
        if files:
            out.fail("index", f"{os.path.basename(index)} is missing; the card records one")
        return
    with np.load(index) as z:
        lengths, returns = z["lengths"], z["returns"]
    if len(lengths) != len(out.lengths) or not np.array_equal(lengths, out.lengths):
        bad = [i for i, (a, b) in enumerate(zip(lengths, out.lengths)) if a != b][:SHOWN]
        out.fail("index", f"{os.path.basename(index)} lists {len(lengths)} episodes of {int(lengths.sum())} steps; "
                          f"the shards hold {len(out.lengths)} of {sum(out.lengths)} (first differing: {bad})")
    elif not np.allclose(returns, out.returns, rtol=1e-9, atol=1e-6, equal_nan=True):
        out.fail("index", f"{os.path.basename(index)}'s returns differ from the episodes' rewards")
    if files and file_sha256(index) != files.get("index_sha256"):
        out.fail("index", f"{os.path.basename(index)}'s digest is not the card's")


def _split_findings(split: str, found: _Split) -> list[Finding]:
    passed = {"shards": f"every shard read: {len(found.lengths)} records",
              "digests": "sizes and sha256 as the card records (or none recorded)",
              "episodes": f"{len(found.lengths)} whole episodes, {sum(found.lengths)} steps, every feature decoded",
              "index": "the episode index matches the episodes (or there is none)"}
    return [Finding(f"{split}: {check}", check not in found.problems,
                    _listed(found.problems[check]) if check in found.problems else ok)
            for check, ok in passed.items()]


def _listed(messages: list[str]) -> str:
    more = f"; and {len(messages) - SHOWN} more" if len(messages) > SHOWN else ""
    return "; ".join(messages[:SHOWN]) + more


def _card_counts(card: Mapping, info: Mapping, counted: Mapping[str, _Split]) -> list[Finding]:
    """The card's counts, per-split sizes and version against what the pass read."""
    if not card:
        return [Finding("card counts", True, "no card (skipped)")]
    lengths = [n for s in counted.values() for n in s.lengths]
    returns = [r for s in counted.values() for r in s.returns]
    read = {**episode_counts(lengths, returns), "splits": {k: len(s.lengths) for k, s in counted.items()}}
    wrong = [f"{k}: card {card[k]}, read {v}" for k, v in read.items() if k in card and not _same(card[k], v)]
    for split, files in card.get("files", {}).items():
        got = (len(counted[split].lengths), sum(counted[split].lengths)) if split in counted else (0, 0)
        if (files.get("episodes"), files.get("steps")) != got:
            wrong.append(f"{split}: card {files.get('episodes')} episodes / {files.get('steps')} steps, read "
                         f"{got[0]} / {got[1]}")
    version, info_version = card.get("version"), info.get("version")
    if version is not None and info_version is not None and version != info_version:
        wrong.append(f"version: card {version}, dataset_info.json {info_version}")
    return [Finding("card counts", not wrong, "; ".join(wrong) if wrong else
                    f"episodes, steps, returns and splits as the card records; version {version or info_version}")]


def _same(recorded, read) -> bool:
    if isinstance(read, float) and recorded is not None:
        return bool(np.isclose(recorded, read, rtol=1e-9, atol=1e-6, equal_nan=True))
    return recorded == read
