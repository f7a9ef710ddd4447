"""Sharing datasets: `rillet dataset validate` on whole and corrupted datasets (a truncated shard, a
shard of another dataset, an index or a card that disagrees with the rest), the loader refusing each
with a clear error, the version carried by merge/split/convert, and the markdown card."""

import json
import os
import shutil

import numpy as np
import pytest

from rillet.datasets.rlds_card import HISTOGRAM_FILE, MARKDOWN_FILE
from rillet.datasets.rlds_loader import INDEX_FILE, RldsRecords, write_index
from rillet.datasets.rlds_reader import CARD_FILE, CorruptDatasetError, RldsEpisodes
from rillet.datasets.rlds_validate import validate_dataset
from rillet.errors import ConfigError
from rillet.pipelines.cli import main as rillet_main
from rillet.pipelines.dataset_cli import convert, generate, merge, split

SHARD = "rillet_rlds-train.array_record-00000"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Two CartPole datasets of 12 random episodes (seeds 0 and 1), the first at version 2.1.0."""
    root = tmp_path_factory.mktemp("v")
    generate("CartPole-v1", str(root / "a"), episodes=12, num_envs=4, seed=0, version="2.1.0", progress=False)
    generate("CartPole-v1", str(root / "b"), episodes=12, num_envs=4, seed=1, progress=False)
    return root


def copy(datasets, tmp_path, name="a"):
    shutil.copytree(datasets / name, tmp_path / name)
    return str(tmp_path / name)


def failed(path) -> dict[str, str]:
    return {f.check: f.detail for f in validate_dataset(path) if not f.ok}


def test_a_whole_dataset_passes_every_check_in_both_formats(datasets, tmp_path, capsys):
    findings = validate_dataset(str(datasets / "a"))
    assert all(f.ok for f in findings) and {"train: shards", "train: digests", "train: episodes", "train: index",
                                            "card features", "card counts"} <= {f.check for f in findings}
    assert rillet_main(["dataset", "validate", str(datasets / "a"), "--json-out", str(tmp_path / "r.json")]) == 0
    assert json.load(open(tmp_path / "r.json"))["ok"] is True and "every check passed" in capsys.readouterr().out
    convert(str(datasets / "a"), str(tmp_path / "tfr"), to="tfrecord")
    assert not failed(str(tmp_path / "tfr"))


def test_a_truncated_shard_is_reported_and_refused(datasets, tmp_path, capsys):
    bad = copy(datasets, tmp_path)
    with open(os.path.join(bad, SHARD), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(bad, SHARD)) // 2)
    problems = failed(bad)
    assert "cannot be read" in problems["train: shards"] and "is not the shard the card records" in problems[
        "train: digests"]
    assert rillet_main(["dataset", "validate", bad]) == 2
    assert "failed" in capsys.readouterr().err
    with pytest.raises(CorruptDatasetError, match="truncated"):
        RldsRecords(bad)
    with pytest.raises(CorruptDatasetError, match="truncated or corrupt.*rillet dataset validate"):
        RldsEpisodes(bad)  # what `train-offline dqn|r2d2|...` opens first, for the data's spec


def test_a_shard_of_another_dataset_is_reported_and_refused(datasets, tmp_path):
    bad = copy(datasets, tmp_path)
    shutil.copyfile(datasets / "b" / SHARD, os.path.join(bad, SHARD))
    problems = failed(bad)
    assert {"train: digests", "train: index", "card counts"} <= set(problems)
    with pytest.raises(CorruptDatasetError, match="replaced"):
        RldsRecords(bad)


def test_an_index_that_disagrees_with_the_shards_is_reported_and_refused(datasets, tmp_path):
    bad = copy(datasets, tmp_path)
    with np.load(os.path.join(bad, INDEX_FILE.format(split="train"))) as z:
        lengths, returns = z["lengths"], z["returns"]
    write_index(bad, "train", lengths[::-1], returns[::-1])
    assert "lists 12 episodes" in failed(bad)["train: index"]
    with pytest.raises(CorruptDatasetError, match="index"):
        RldsRecords(bad)
    card = json.load(open(os.path.join(bad, CARD_FILE)))
    del card["files"]  # a card without digests (an older rillet): the loader's spot check still refuses
    json.dump(card, open(os.path.join(bad, CARD_FILE), "w"))
    with pytest.raises(CorruptDatasetError, match="episode 0 .* has \\d+ steps"):
        RldsRecords(bad)


def test_a_card_that_disagrees_with_the_features_is_reported_and_refused(datasets, tmp_path):
    bad = copy(datasets, tmp_path)
    card = json.load(open(os.path.join(bad, CARD_FILE)))
    card["features"]["steps/observation"]["shape"] = [6]
    json.dump(card, open(os.path.join(bad, CARD_FILE), "w"))
    assert "steps/observation" in failed(bad)["card features"]
    with pytest.raises(CorruptDatasetError, match="features.json"):
        RldsRecords(bad)


def test_the_version_is_carried_forward_and_checked(datasets, tmp_path):
    a, b = str(datasets / "a"), str(datasets / "b")
    for out in (convert(a, str(tmp_path / "c")), split(a, str(tmp_path / "s"), validation_fraction=0.25)):
        assert out["version"] == "2.1.0"
        assert json.load(open(tmp_path / "c" / "dataset_info.json"))["version"] == "2.1.0"
    assert convert(a, str(tmp_path / "c3"), version="3.0.0")["version"] == "3.0.0"
    with pytest.raises(ConfigError, match="different versions"):
        merge([a, b], str(tmp_path / "m"))
    assert merge([a, b], str(tmp_path / "m"), version="4.0.0")["version"] == "4.0.0"
    with pytest.raises(ConfigError, match="MAJOR.MINOR.PATCH"):
        convert(a, str(tmp_path / "bad"), version="v2")
    assert not failed(str(tmp_path / "m"))


def test_generate_writes_a_markdown_card(datasets):
    card = json.load(open(datasets / "a" / CARD_FILE))
    text = open(datasets / "a" / MARKDOWN_FILE).read()
    assert "| version | 2.1.0 |" in text and "| environment | CartPole-v1 |" in text
    assert "| `steps/observation` | tensor | [4] | float32 | none |" in text
    assert f"| train | 12 | {card['num_steps']} |" in text and card["files"]["train"]["shards"][0]["sha256"] in text
    with open(datasets / "a" / HISTOGRAM_FILE, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
