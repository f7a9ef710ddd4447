"""What a dataset's card records about its own files, and the checks a reader makes against it.

    card["files"] == {"train": {"shards": [{"file": "rillet_rlds-train.array_record-00000",
                                            "bytes": 81920, "sha256": "9f2c..."}],
                                "index": "rillet_index-train.npz", "index_sha256": "41aa...",
                                "episodes": 100, "steps": 2210}}

`rlds_finalise.DatasetDraft.commit` records `split_files` of every split in the card, beside the
features (`describe_features`) and the counts. Opening a split (`check_split`, called by the loader)
compares what needs no pass over the data: each shard's size (and, for splits up to
DIGEST_LIMIT_BYTES, its SHA-256), the index's digest, the card's features and spec against
features.json, the split's episode count; the loader then decodes the first episode of every shard
against the index (`rlds_loader.read_index`). A mismatch is a
`CorruptDatasetError` that names the file and points at `rillet dataset validate`, which also
recomputes the shards' digests and decodes every episode (`rlds_validate`). Datasets without these
card entries (written by tfds, rlds or an older rillet) skip the checks they lack.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Mapping

import numpy as np

from rillet.datasets.rlds_features import array_spec
from rillet.datasets.rlds_reader import CorruptDatasetError, describe_features
from rillet.datasets.specs import StepSpec

DIGEST_LIMIT_BYTES = 256 << 20  # a split's shards up to this size are hashed at every open (0.2 s here)
VALIDATE_HINT = "Run `rillet dataset validate {path}` for a full report, and regenerate or re-download the dataset."


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def split_files(directory: str, shard_names: list[str], index_name: str, episodes: int, steps: int) -> dict:
    """The card's record of one split's files: shard sizes and digests, the index digest, the counts."""
    shards = [{"file": n, "bytes": os.path.getsize(os.path.join(directory, n)),
               "sha256": file_sha256(os.path.join(directory, n))} for n in shard_names]
    return {"shards": shards, "index": index_name, "index_sha256": file_sha256(os.path.join(directory, index_name)),
            "episodes": int(episodes), "steps": int(steps)}


def card_problems(path: str, card: Mapping, layout: Mapping) -> list[str]:
    """Where the card disagrees with features.json: the features it lists, and its StepSpec's fields
    (shape and dtype) against the step layout. [] when they agree or the card records neither."""
    problems = []
    if "features" in card:
        actual = json.loads(json.dumps(describe_features(path)))
        recorded = card["features"]
        diff = sorted(k for k in set(actual) | set(recorded) if actual.get(k) != recorded.get(k))
        if diff:
            listed = [f"{k}: card {recorded.get(k)}, features.json {actual.get(k)}" for k in diff[:4]]
            problems.append("the card lists features that features.json does not have as listed: " + "; ".join(listed))
    if "spec" in card:
        spec = StepSpec.from_json(card["spec"])
        want = {k: v for k, v in spec.fields().items() if k != "extras"}
        want.update({f"extras/{k}": v for k, v in spec.extras.items()})
        got = {k: _shape_dtype(array_spec(v)) for k, v in layout.items()}
        diff = [f"{k}: card {_shape_dtype(w)}, features.json {got.get(k, 'nothing')}"
                for k, w in sorted(want.items()) if got.get(k) != _shape_dtype(w)]
        if diff:
            problems.append("the card's spec disagrees with features.json: " + "; ".join(diff[:4]))
    return problems


def _shape_dtype(spec) -> str:
    return f"{list(spec.shape)} {np.dtype(spec.dtype).name}"


def check_split(path: str, split: str, card: Mapping, layout: Mapping, shard_paths: list[str],
                num_episodes: int) -> None:
    """Raises CorruptDatasetError where `split`'s files disagree with what the card records of them
    (see the module docstring); cheap: file sizes, one small digest, the features."""
    hint = VALIDATE_HINT.format(path=path)
    problems = card_problems(path, card, layout)
    if problems:
        raise CorruptDatasetError(f"dataset '{path}': {problems[0]}. {hint}")
    files = card.get("files", {}).get(split)
    if not files:
        return
    if len(files["shards"]) != len(shard_paths):
        raise CorruptDatasetError(f"split {split!r} of '{path}' has {len(shard_paths)} shards in dataset_info.json "
                                  f"but the card records {len(files['shards'])}. {hint}")
    hash_them = sum(r["bytes"] for r in files["shards"]) <= DIGEST_LIMIT_BYTES
    for shard, recorded in zip(shard_paths, files["shards"]):
        size = os.path.getsize(shard)
        if size != recorded["bytes"]:
            raise CorruptDatasetError(f"shard '{shard}' is {size} bytes but the card records {recorded['bytes']} "
                                      f"(as {recorded['file']}): it was truncated or replaced. {hint}")
        if hash_them and file_sha256(shard) != recorded["sha256"]:
            raise CorruptDatasetError(f"shard '{shard}' is not the one the card records (its sha256 differs): it "
                                      f"was replaced or corrupted. {hint}")
    if files["episodes"] != num_episodes:
        raise CorruptDatasetError(f"split {split!r} of '{path}' holds {num_episodes} episodes but the card "
                                  f"records {files['episodes']}. {hint}")
    index = os.path.join(path, files["index"])
    if os.path.exists(index) and file_sha256(index) != files["index_sha256"]:
        raise CorruptDatasetError(f"the episode index '{index}' is not the one written with the shards (its "
                                  f"digest differs from the card's). Delete it to rebuild it from the shards. {hint}")
