"""agent_batches: an agent's replay items from an RLDS dataset on disk (a real one, written by `rillet dataset
generate`), their length from the agent record, the recurrent extras a random policy does not record filled
from the data, and one learner update on them."""

import dataclasses

import jax
import numpy as np
import pytest

from rillet.datasets.rlds_reader import RldsEpisodes, rlds_episodes
from rillet.errors import SpecMismatchError
from rillet.learners.agents import get_agent
from rillet.learners.dqn import DQNConfig
from rillet.learners.himo import HiMoConfig
from rillet.learners.ngu import NGUConfig
from rillet.pipelines.agent_data import agent_batches
from rillet.pipelines.config import ReplayConfig
from rillet.pipelines.dataset_cli import generate

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


def test_one_himo_update_on_dataset_sequences(data):
    agent = get_agent("himo")
    batch = next(agent_batches(data, "himo", HIMO, REPLAY, seed=0))
    assert batch["observation"].shape == (REPLAY.batch_size, HIMO.sequence_length, 4)
    state = agent.init(jax.random.PRNGKey(0), agent.spec(RldsEpisodes(data).spec, HIMO), HIMO)
    _, metrics = agent.update(state, batch, HIMO)
    assert all(np.isfinite(float(metrics[k])) for k in ("loss", "q_loss", "hindsight_loss", "model_loss"))
    assert float(metrics["hindsight_steps"]) > 0


def test_transitions_for_dqn_and_a_clear_error_for_extras_the_data_lacks(data):
    batch = next(agent_batches(data, "dqn", DQNConfig(), REPLAY, gamma=0.9, seed=0))
    assert batch["reward"].shape == (REPLAY.batch_size,) and "is_terminal" not in batch
    assert np.all(np.isclose(batch["discount"], 0.81) | (batch["discount"] == 0))  # gamma^2 unless it ended
    with pytest.raises(SpecMismatchError, match="prev_intrinsic_reward"):
        agent_batches(data, "ngu", NGUConfig(), REPLAY)
