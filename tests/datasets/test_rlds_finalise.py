"""rlds_finalise: one finaliser and one shard-name template for the writer and `rillet dataset`;
datasets named by the older `rillet dataset` template ("...-00000-of-00003") still load."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from rillet.datasets.rlds_finalise import SHARD_TEMPLATE, DatasetDraft
from rillet.datasets.rlds_loader import rlds
from rillet.datasets.rlds_reader import INCOMPLETE_INFIX, INCOMPLETE_MARKER, IncompleteDatasetError, rlds_episodes
from rillet.datasets.rlds_writer import RldsWriter
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError
from rillet.pipelines.dataset_cli import convert, split

SPEC = StepSpec(ArraySpec((3,), "float32"), ArraySpec((), "int32"), num_actions=2)
OLD_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_INDEX}-of-{NUM_SHARDS}"


def write(out, rounds=4, per_shard=3):
    """Two envs, `rounds` episodes of 4 steps each; observation = (episode id, step, 0)."""
    with RldsWriter(out, SPEC, env_id="X", policy_name="p", seed=0, max_episodes_per_shard=per_shard) as w:
        for t in range(4 * rounds):
            k, step = divmod(t, 4)
            w.write({"observation": np.array([[2 * k, step, 0], [2 * k + 1, step, 0]], np.float32),
                     "action": np.zeros(2, np.int32), "reward": np.full(2, k, np.float32),
                     "discount": np.ones(2, np.float32), "is_first": np.full(2, step == 0),
                     "is_last": np.full(2, step == 3), "is_terminal": np.zeros(2, bool), "extras": {}})
    return str(out)


def shard_names(path):
    return sorted(n for n in os.listdir(path) if ".array_record-" in n or ".tfrecord-" in n)


def split_infos(path):
    with open(os.path.join(path, "dataset_info.json")) as f:
        return {s["name"]: s for s in json.load(f)["splits"]}


def test_writer_and_commands_name_shards_alike(tmp_path):
    out = write(tmp_path / "w")
    assert shard_names(out) == [f"rillet_rlds-train.array_record-{i:05d}" for i in range(3)]
    assert split_infos(out)["train"]["shardLengths"] == ["3", "3", "2"]
    split(out, str(tmp_path / "s"), validation_fraction=0.25, episodes_per_shard=4)
    assert shard_names(tmp_path / "s") == ["rillet_rlds-train.array_record-00000",
                                           "rillet_rlds-train.array_record-00001",
                                           "rillet_rlds-validation.array_record-00000"]
    convert(out, str(tmp_path / "t"), to="tfrecord", episodes_per_shard=5)
    assert shard_names(tmp_path / "t") == [f"rillet_rlds-train.tfrecord-{i:05d}" for i in range(2)]
    for path in (out, tmp_path / "s", tmp_path / "t"):
        assert {s["filepathTemplate"] for s in split_infos(path).values()} == {SHARD_TEMPLATE}
    assert tfds.builder_from_directory(str(tmp_path / "s")).info.splits["validation"].num_examples == 2


def rename_to_old_template(path):
    """What `rillet dataset` wrote before: shards "<name>-<split>.<format>-<index>-of-<count>"."""
    info_file = os.path.join(path, "dataset_info.json")
    with open(info_file) as f:
        info = json.load(f)
    for s in info["splits"]:
        count = len(s["shardLengths"])
        for i in range(count):
            old = f"{info['name']}-{s['name']}.{info['fileFormat']}-{i:05d}"
            os.rename(os.path.join(path, old), os.path.join(path, f"{old}-of-{count:05d}"))
        s["filepathTemplate"] = OLD_TEMPLATE
    with open(info_file, "w") as f:
        json.dump(info, f)


def test_datasets_with_the_old_shard_names_still_load(tmp_path):
    out = write(tmp_path / "old")
    want = [e["steps"]["observation"].tobytes() for e in rlds_episodes(out)]
    rename_to_old_template(out)
    assert shard_names(out)[0] == "rillet_rlds-train.array_record-00000-of-00003"
    assert [e["steps"]["observation"].tobytes() for e in rlds_episodes(out)] == want
    assert sum(len(b["reward"]) for b in rlds(out, batch_size=1, shuffle=False, drop_remainder=False)) == 8 * 3
    assert len(tfds.builder_from_directory(out).as_data_source()["train"]) == 8
    convert(out, str(tmp_path / "new"), to="array_record")
    assert shard_names(tmp_path / "new") == ["rillet_rlds-train.array_record-00000"]
    assert [e["steps"]["observation"].tobytes() for e in rlds_episodes(tmp_path / "new")] == want


def test_a_draft_looks_incomplete_until_commit_and_vanishes_on_error(tmp_path):
    base = write(tmp_path / "base")
    out = tmp_path / "out"
    first, seen = rlds_episodes(base).source[0], []

    def records():  # one episode, then a look at the temporary directory while the command writes
        yield first
        (tmp,) = [n for n in os.listdir(tmp_path) if n.startswith("out" + INCOMPLETE_INFIX)]
        assert os.path.exists(tmp_path / tmp / INCOMPLETE_MARKER) and not out.exists()
        assert shard_names(tmp_path / tmp) == ["rillet_rlds-train.array_record-00000"]
        with pytest.raises(IncompleteDatasetError, match="rm -rf"):
            rlds_episodes(tmp_path / tmp)
        seen.append(tmp)
        raise RuntimeError("source died")

    from rillet.pipelines.dataset_cli import _build

    with pytest.raises(RuntimeError, match="source died"):
        _build(str(out), base, {"train": records}, "array_record", {}, 10)
    assert seen and sorted(os.listdir(tmp_path)) == ["base"]
    with DatasetDraft(out, "x", "array_record", 2) as draft:  # left without commit: discarded
        draft.split("train").write(b"abc", 1, 0.0)
    assert sorted(os.listdir(tmp_path)) == ["base"]


def test_draft_refuses_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="already exists.*--out"):
        DatasetDraft(tmp_path, "x", "array_record", 1, option="--out")
    with pytest.raises(ConfigError, match="file_format"):
        DatasetDraft(tmp_path / "a", "x", "parquet", 1)
    with pytest.raises(ConfigError, match="per_shard"):
        DatasetDraft(tmp_path / "b", "x", "tfrecord", 0)
    with DatasetDraft(tmp_path / "c", "x", "tfrecord", 1) as draft:
        draft.split("train")
        with pytest.raises(ConfigError, match="'train' .* already"):
            draft.split("train")
    assert os.listdir(tmp_path) == []


def test_drafts_of_killed_writers_are_removed_by_the_next_writer_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    out = str(tmp_path / "data")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, live = f"{out}{INCOMPLETE_INFIX}{gone.stdout.strip()}-0000aaaa", f"{out}{INCOMPLETE_INFIX}{os.getpid()}-bbbb"
    unmarked = f"{out}{INCOMPLETE_INFIX}{gone.stdout.strip()}-cccc"  # not a draft of ours: no marker
    for d in (dead, live, unmarked):
        os.makedirs(d)
    for d in (dead, live):
        open(os.path.join(d, INCOMPLETE_MARKER), "w").close()
    draft = DatasetDraft(out, "rillet_rlds", "array_record", per_shard=10)
    draft.discard()
    assert not os.path.exists(dead) and os.path.isdir(live) and os.path.isdir(unmarked)
