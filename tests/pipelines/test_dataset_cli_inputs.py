"""Bad inputs to `rillet dataset ...`: each is one clear rillet error, raised before anything is written."""

import glob
import json
import os
import shutil

import pytest

from rillet.datasets.rlds_finalise import DatasetDraft
from rillet.datasets.rlds_reader import CorruptDatasetError, DatasetPathError
from rillet.errors import ConfigError
from rillet.pipelines.dataset_cli import convert, generate, inspect, merge, split


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A generated dataset, and a copy whose card says another env and policy (the same features)."""
    root = tmp_path_factory.mktemp("inputs")
    generate("CartPole-v1", str(root / "d"), episodes=12, num_envs=4, seed=2, progress=False)
    shutil.copytree(root / "d", root / "other")
    with open(root / "other" / "rillet_card.json") as f:
        card = json.load(f)
    with open(root / "other" / "rillet_card.json", "w") as f:
        json.dump({**card, "env_id": "CartPole-v0", "policy": "checkpoint:run"}, f)
    return str(root / "d"), str(root / "other")


def _damaged(src: str, dst, damage: str, split: str = "train") -> str:
    """A copy of `src` whose first `split` shard is cut to half its size ("truncate") or has 16 bytes
    flipped inside its records ("flip")."""
    shutil.copytree(src, dst)
    shard = sorted(glob.glob(os.path.join(dst, f"*-{split}.array_record-*")))[0]
    with open(shard, "r+b") as f:
        if damage == "truncate":
            f.truncate(os.path.getsize(shard) // 2)
        else:
            f.seek(2000)
            block = f.read(16)
            f.seek(2000)
            f.write(bytes(b ^ 0xFF for b in block))
    return shard


@pytest.mark.parametrize("fraction", [float("nan"), float("inf"), 1.0])
def test_split_refuses_a_fraction_outside_0_1(data, tmp_path, fraction):
    with pytest.raises(ConfigError, match=r"validation_fraction=.* must be a finite number in \(0, 1\).*"
                                          "--validation-fraction"):
        split(data[0], str(tmp_path / "s"), validation_fraction=fraction)


@pytest.mark.parametrize("command", ["split", "merge", "convert"])
def test_episodes_per_shard_0_is_refused_before_anything_is_written(data, tmp_path, command):
    out = str(tmp_path / "out")
    run = {"split": lambda: split(data[0], out, episodes_per_shard=0),
           "merge": lambda: merge(list(data), out, episodes_per_shard=0),
           "convert": lambda: convert(data[0], out, episodes_per_shard=0)}[command]
    with pytest.raises(ConfigError, match="episodes_per_shard=0 .*--episodes-per-shard"):
        run()
    assert os.listdir(tmp_path) == []


def test_merge_refuses_fewer_than_two_inputs_and_a_dataset_twice(data, tmp_path):
    d = data[0]
    os.symlink(d, tmp_path / "link")
    for inputs in ([], [d]):
        with pytest.raises(ConfigError, match="at least two --inputs.*dataset convert"):
            merge(inputs, str(tmp_path / "m"))
    for inputs in ([d, d], [d, d + "/."], [d, str(tmp_path / "link")]):
        with pytest.raises(ConfigError, match="twice.*duplicate every episode"):
            merge(inputs, str(tmp_path / "m"))
    assert os.listdir(tmp_path) == ["link"]


def test_merged_card_names_each_inputs_env_and_policy(data, tmp_path):
    card = merge(list(data), str(tmp_path / "m"))
    assert [(s["env_id"], s["policy"], s["episodes"]) for s in card["merged_from"]] == [
        ("CartPole-v1", "random", 12), ("CartPole-v0", "checkpoint:run", 12)]
    assert card["env_ids"] == ["CartPole-v1", "CartPole-v0"] and card["policy"] == "mixed: random, checkpoint:run"
    with open(tmp_path / "m" / "README.md") as f:
        assert "(CartPole-v0, checkpoint:run)" in f.read()


def test_generate_refuses_bad_counts_before_starting_environments(tmp_path, monkeypatch):
    import rillet.actors.environments as environments

    monkeypatch.setattr(environments, "make_batched_env", lambda *a, **k: pytest.fail("environments started"))
    with pytest.raises(ConfigError, match=r"num_envs=100000 .* in \[1, 4096\]. Fix --num-envs"):
        generate("CartPole-v1", str(tmp_path / "g"), num_envs=100000)
    with pytest.raises(ConfigError, match="episodes=0 .*Fix --episodes"):
        generate("CartPole-v1", str(tmp_path / "g"), episodes=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(DatasetPathError, match="lies under .*file"):
        generate("CartPole-v1", str(tmp_path / "file" / "g"))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_convert_and_split_name_a_damaged_shard(data, tmp_path, damage):
    shard = _damaged(data[0], tmp_path / "bad", damage)
    for run in (lambda out: convert(str(tmp_path / "bad"), out), lambda out: split(str(tmp_path / "bad"), out)):
        with pytest.raises(CorruptDatasetError, match=f"{os.path.basename(shard)}' cannot be read after .* records "
                                                      ".*rillet dataset validate"):
            run(str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path)) == ["bad"]  # no output, no .incomplete directory


def test_inspect_refuses_a_damaged_shard_in_any_split(data, tmp_path):
    split(data[0], str(tmp_path / "s"), validation_fraction=0.5)
    for damaged in ("train", "validation"):  # inspect shows train; every split is checked
        _damaged(str(tmp_path / "s"), tmp_path / damaged, "flip", damaged)
        with pytest.raises(CorruptDatasetError, match=f"-{damaged}.*sha256 differs.*rillet dataset validate"):
            inspect(str(tmp_path / damaged), split="train", histogram=str(tmp_path / "h.png"))


@pytest.mark.parametrize("where", ["a file", "under a file", "read-only"])
def test_an_unwritable_out_is_refused_before_any_work(data, tmp_path, monkeypatch, where):
    (tmp_path / "f").write_text("")
    out = {"a file": tmp_path / "f", "under a file": tmp_path / "f" / "new" / "d", "read-only": tmp_path / "d"}[where]
    if where == "read-only":  # root writes anywhere: stand in for a directory this user cannot write
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if p == str(tmp_path) else real(p, mode))
    message = {"a file": "already exists \\(a file\\)", "under a file": "lies under '.*f', which is a file",
               "read-only": "cannot be written: '.*' is read-only"}[where]
    with pytest.raises(DatasetPathError, match=message):
        convert(data[0], str(out))
    with pytest.raises(DatasetPathError, match=message):  # the writer's draft makes the same check
        DatasetDraft(str(out), "x", "array_record", 10)
    assert sorted(os.listdir(tmp_path)) == ["f"]
