"""`rillet dataset ...` commands: generate (random and checkpoint policy), inspect, split, merge,
convert, called directly and through `python -m rillet.pipelines.dataset_cli`."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from rillet.datasets.rlds_loader import rlds
from rillet.datasets.rlds_reader import rlds_episodes
from rillet.errors import CheckpointError, ConfigError
from rillet.pipelines import dataset_cli
from rillet.pipelines.dataset_cli import convert, dataset_commands, generate, inspect, merge, split


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("g") / "cartpole")
    card = generate("CartPole-v1", out, episodes=30, num_envs=4, seed=1, progress=False)
    return out, card


def test_commands_are_exposed():
    assert set(dataset_commands()) == {"generate", "inspect", "validate", "merge", "split", "convert"}


def test_generate_exactly_n_episodes_and_inspect(generated, tmp_path):
    out, card = generated
    assert card["num_episodes"] == 30 and card["policy"] == "random" and card["env_id"] == "CartPole-v1"
    eps = rlds_episodes(out)
    assert len(eps) == 30 and sum(len(e["steps"]["reward"]) for e in eps) == card["num_steps"]
    summary = inspect(out, histogram=str(tmp_path / "h.png"))
    assert summary["episodes"] == 30 and summary["splits"] == {"train": 30}
    assert summary["layout"]["observation"] == [[4], "float32"]
    with open(tmp_path / "h.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_split_merge_convert_round_trip(generated, tmp_path):
    import tensorflow_datasets as tfds

    out, _ = generated
    card = split(out, str(tmp_path / "s"), validation_fraction=0.2, seed=3)
    assert card["splits"] == {"train": 24, "validation": 6}
    train = {e["steps"]["observation"].tobytes() for e in rlds_episodes(tmp_path / "s", "train")}
    val = {e["steps"]["observation"].tobytes() for e in rlds_episodes(tmp_path / "s", "validation")}
    everything = {e["steps"]["observation"].tobytes() for e in rlds_episodes(out)}
    assert not train & val and train | val == everything
    assert len(list(rlds(str(tmp_path / "s"), split="validation", batch_size=1))) > 0
    with pytest.raises(ConfigError, match="empty split"):
        split(out, str(tmp_path / "s0"), validation_fraction=0.001)

    merged = merge([out, str(tmp_path / "s")], str(tmp_path / "m"))
    assert merged["splits"] == {"train": 54, "validation": 6} and merged["num_episodes"] == 60
    convert(str(tmp_path / "m"), str(tmp_path / "tfr"), to="tfrecord")
    ds = tfds.builder_from_directory(str(tmp_path / "tfr")).as_dataset(split="validation")
    assert sum(1 for _ in ds) == 6
    back = convert(str(tmp_path / "tfr"), str(tmp_path / "ar"), to="array_record")
    assert back["splits"] == merged["splits"]
    want = [e["steps"] for e in rlds_episodes(tmp_path / "m")]
    got = [e["steps"] for e in rlds_episodes(tmp_path / "ar")]
    assert len(got) == len(want) == 54
    assert all(np.array_equal(a["observation"], b["observation"]) for a, b in zip(want, got))
    src = tfds.builder_from_directory(str(tmp_path / "ar")).as_data_source()["train"]
    assert len(src) == 54 and len(list(src[0]["steps"])) == len(got[0]["reward"])
    with pytest.raises(ConfigError, match="already exists"):
        convert(out, str(tmp_path / "ar"))


def test_generate_with_a_checkpointed_greedy_policy(tmp_path):
    import jax

    from rillet.actors.envpool_env import env_step_spec
    from rillet.learners import dqn
    from rillet.pipelines.checkpointing import Checkpointer
    from rillet.pipelines.config import OnlineConfig

    config = OnlineConfig(env_id="CartPole-v1", learner=dataclasses.replace(dqn.DQNConfig(), hidden_sizes=(8,)),
                          run_dir=str(tmp_path / "run"))
    os.makedirs(config.run_dir)
    with open(os.path.join(config.run_dir, "config.json"), "w") as f:
        f.write(config.to_json())
    state = dqn.init(jax.random.PRNGKey(5), env_step_spec("CartPole-v1"), config.learner)
    ckpt = Checkpointer(os.path.join(config.run_dir, "checkpoints"), config.learner_fingerprint())
    ckpt.save(10, state, {"env_steps": 0, "updates": 10})
    ckpt.close()
    card = generate("CartPole-v1", str(tmp_path / "d"), policy=f"checkpoint:{config.run_dir}", episodes=6,
                    num_envs=2, progress=False)
    assert card["num_episodes"] == 6
    ep = rlds_episodes(tmp_path / "d")[0]["steps"]
    q = np.asarray(dqn.q_values(state.online, ep["observation"][:-1]))
    np.testing.assert_array_equal(ep["action"][:-1], q.argmax(-1))  # greedy in the restored network
    with pytest.raises(CheckpointError, match="not a `rillet train-online` run directory"):
        generate("CartPole-v1", str(tmp_path / "e"), policy=f"checkpoint:{tmp_path}", episodes=1)


def test_module_entry_point(generated, tmp_path):
    out, _ = generated
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [sys.executable, "-m", "rillet.pipelines.dataset_cli"]
    ok = subprocess.run(cmd + ["inspect", out, "--histogram", str(tmp_path / "r.png"), "--steps", "2"],
                        env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert '"episodes": 30' in ok.stdout and "first 2 steps" in ok.stdout and os.path.exists(tmp_path / "r.png")
    bad = subprocess.run(cmd + ["inspect", str(tmp_path / "nothing")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    assert dataset_cli.main(["split", out, "--out", str(tmp_path / "x"), "--validation-fraction", "0.5"]) == 0
