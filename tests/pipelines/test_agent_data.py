"""agent_batches: an agent's replay items from an RLDS dataset on disk (a real one, written by `rillet dataset
generate`), their length from the agent record, the recurrent extras a random policy does not record filled
from the data; `rillet train-offline AGENT` training on them, resuming mid-epoch exactly."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from rillet.datasets.rlds_loader import rlds
from rillet.datasets.rlds_reader import RldsEpisodes, rlds_episodes
from rillet.datasets.rlds_writer import RldsWriter
from rillet.errors import CheckpointError, ConfigError, SpecMismatchError
from rillet.learners.agents import get_agent
from rillet.learners.dqn import DQNConfig
from rillet.learners.himo import HiMoConfig
from rillet.learners.ngu import NGUConfig
from rillet.pipelines.agent_data import agent_batches
from rillet.pipelines.config import ReplayConfig
from rillet.pipelines.checkpointing import Checkpointer
from rillet.pipelines.cli import main
from rillet.pipelines.dataset_cli import generate
from rillet.pipelines.metrics import read_jsonl
from rillet.pipelines.offline_agents import AgentOfflineConfig, train_offline_agent
from rillet.pipelines.policy_loader import load_policy
from tests.datasets.replay_sim import SPEC as SIM_SPEC, make_episode, reference_sequences

HIMO = HiMoConfig(burn_in=2, trace_length=4, n_step=2, lookahead=2, lstm_size=8, hidden_sizes=(8,), hindsight_hidden=8)
REPLAY = ReplayConfig(sequence_period=3, batch_size=8, n_step=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("agent-data") / "cartpole")
    generate("CartPole-v1", out, episodes=12, num_envs=2, seed=1, progress=False)
    return out


def all_windows(path, config):
    batches = agent_batches(path, "himo", config, dataclasses.replace(REPLAY, batch_size=1), shuffle=False,
                            num_epochs=1, drop_remainder=False)
    return [jax.tree_util.tree_map(lambda x: x[0], b) for b in batches]


def test_himo_sequences_take_their_length_from_the_agent_record_and_fill_the_extras(data):
    episodes = [e["steps"] for e in rlds_episodes(data)]
    for config in (HIMO, dataclasses.replace(HIMO, lookahead=5)):
        windows = all_windows(data, config)
        length = config.burn_in + config.trace_length + config.n_step + config.lookahead
        assert {w["action"].shape for w in windows} == {(length,)}
        assert len(windows) == sum(-(-(len(e["reward"]) - 1) // REPLAY.sequence_period) for e in episodes)
    # the SequenceWriter's starts: 0, P, 2P, ... before each episode's last step
    starts = [(i, s) for i, e in enumerate(episodes) for s in range(0, len(e["reward"]) - 1, REPLAY.sequence_period)]
    for (i, s), w in zip(starts, windows):  # unshuffled: episode by episode, start by start
        e, real = episodes[i], min(length, len(episodes[i]["reward"]) - s)
        assert w["mask"].tolist() == [True] * real + [False] * (length - real)
        np.testing.assert_array_equal(w["action"][:real], e["action"][s:s + real])
        previous = np.concatenate([[0], e["action"]])[s:s + real]
        np.testing.assert_array_equal(w["extras"]["prev_action"][:real], previous)
        np.testing.assert_array_equal(w["extras"]["prev_reward"][:real], np.concatenate([[0], e["reward"]])[s:s + real])
        assert not w["extras"]["recurrent_state_h"].any() and np.isnan(w["extras"]["behaviour_prob"]).all()


def test_transitions_for_dqn_and_a_clear_error_for_extras_the_data_lacks(data):
    batch = next(agent_batches(data, "dqn", DQNConfig(), REPLAY, gamma=0.9, seed=0))
    assert batch["reward"].shape == (REPLAY.batch_size,) and "is_terminal" not in batch
    assert np.all(np.isclose(batch["discount"], 0.81) | (batch["discount"] == 0))  # gamma^2 unless it ended
    with pytest.raises(SpecMismatchError, match="prev_intrinsic_reward"):
        agent_batches(data, "ngu", NGUConfig(), REPLAY)
    with pytest.raises(ConfigError, match="behaviour cloning takes the network of one of"):
        AgentOfflineConfig(agent="himo", data=data, behaviour_cloning=True).validate()


@pytest.mark.parametrize("length,period", [(5, 2), (3, 4)])
def test_windows_every_start_are_the_sequence_writers_items(tmp_path, length, period):
    """The loader's windows (every_start, as agent_batches reads them) equal the slow reference of the
    replay SequenceWriter's items: the same starts, steps, padding, mask and stored extras."""
    rng = np.random.default_rng(length)
    episodes = [make_episode(0, e, T, bool(e % 2), rng) for e, T in enumerate((1, 2, 4, 7, 9))]
    with RldsWriter(str(tmp_path / "d"), SIM_SPEC, env_id="X", policy_name="p", seed=0) as writer:
        for ep in episodes:
            for t in range(len(ep["reward"])):
                writer.write(jax.tree_util.tree_map(lambda x: np.asarray(x)[t:t + 1], ep))
    windows = rlds(str(tmp_path / "d"), transform="windows", window=length, stride=period, every_start=True,
                   batch_size=1, shuffle=False, num_epochs=1, drop_remainder=False)
    got = {tuple(int(x) for x in w["steps"]["observation"][0, 0]): w for w in windows}
    expected = reference_sequences([[(ep, len(ep["reward"])) for ep in episodes]], length, period)
    assert set(got) == set(expected)
    for key, want in expected.items():
        np.testing.assert_array_equal(got[key]["mask"][0], want["mask"])
        for name in ("observation", "action", "reward", "discount", "is_first", "is_last", "is_terminal"):
            np.testing.assert_array_equal(got[key]["steps"][name][0], want[name], err_msg=f"{key} {name}")
        np.testing.assert_array_equal(got[key]["steps"]["extras"]["h"][0], want["extras"]["h"])


def offline_dqn(data, run_dir, num_updates, **kw):
    return AgentOfflineConfig(agent="dqn", learner=DQNConfig(hidden_sizes=(16,)), data=data, num_updates=num_updates,
                              batch_size=16, eval_every_updates=0, eval_episodes=2, checkpoint_every_updates=7,
                              run_dir=str(run_dir), **kw)


def test_offline_dqn_resumes_mid_epoch_to_the_same_parameters(data, tmp_path):
    """12 records per batch of 16 over ~300 transitions: 40 updates are two epochs; the interrupted run
    stops at 21 (mid-epoch) and resumes from its checkpoint at 21."""
    straight = train_offline_agent(offline_dqn(data, tmp_path / "a", 40))
    train_offline_agent(offline_dqn(data, tmp_path / "b", 21))
    resumed = train_offline_agent(offline_dqn(data, tmp_path / "b", 40))
    assert straight["updates"] == resumed["updates"] == 40 and resumed["final_eval"]["episodes"] == 2
    template = get_agent("dqn").init(jax.random.PRNGKey(0), learner_spec_of(data), DQNConfig(hidden_sizes=(16,)))
    fingerprint = offline_dqn(data, "", 40).fingerprint()
    a, _ = Checkpointer(os.path.join(tmp_path, "a", "checkpoints"), fingerprint).restore(template)
    b, meta = Checkpointer(os.path.join(tmp_path, "b", "checkpoints"), fingerprint).restore(template)
    assert meta["updates"] == 40
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    loaded = load_policy(str(tmp_path / "b"), RldsEpisodes(data).spec, num_envs=4)  # the one loader
    assert loaded.agent == "dqn" and loaded.step == 40
    obs = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    action, _, _ = loaded.parts.policy(loaded.params, obs, loaded.parts.actor_state, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(action, np.argmax(np.asarray(b.online(obs)), axis=-1))
    with pytest.raises(CheckpointError):
        train_offline_agent(dataclasses.replace(offline_dqn(data, tmp_path / "b", 50), seed=1))
    with pytest.raises(SpecMismatchError, match="observation-indices"):
        train_offline_agent(offline_dqn(data, tmp_path / "c", 5, observation_indices=(0, 2)))


def learner_spec_of(data):
    from rillet.pipelines.agent_data import learner_spec

    return learner_spec(data, "train", get_agent("dqn"), DQNConfig(hidden_sizes=(16,)))


def test_train_offline_himo_from_the_command_line(data, tmp_path):
    run_dir = str(tmp_path / "himo")
    assert main(["train-offline", "himo", "--data", data, "--num-updates", "12", "--eval-every-updates", "6",
                 "--eval-episodes", "2", "--batch-size", "8", "--sequence-period", "3", "--run-dir", run_dir,
                 "--himo.burn-in", "2", "--himo.trace-length", "4", "--himo.n-step", "2", "--himo.lookahead", "2",
                 "--himo.lstm-size", "8", "--himo.hidden-sizes", "8", "--himo.hindsight-hidden", "8"]) == 0
    learner = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if "learner/loss" in r]
    assert learner and all(np.isfinite(learner[-1][f"learner/{k}"]) for k in ("q_loss", "hindsight_loss", "model_loss"))
    assert [r["updates"] for r in read_jsonl(os.path.join(run_dir, "curve.jsonl"))] == [6, 12]
    with open(os.path.join(run_dir, "summary.json")) as f:
        assert json.load(f)["data_return_mean"] > 0
