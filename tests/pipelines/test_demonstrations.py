"""Replay seeded from data: demonstration items in a second real Reverb table, batches mixing them with
the replay table's at the configured fraction, and an online run that learns from both."""

import numpy as np
import pytest
import reverb

from rillet.datasets import replay_stage
from rillet.datasets.reverb_tables import make_server, make_table, transition_signature
from rillet.datasets.rlds_reader import rlds_episodes
from rillet.errors import ConfigError
from rillet.learners.agents import get_agent
from rillet.learners.dqn import DQNConfig
from rillet.pipelines import demonstrations as demo
from rillet.pipelines.agent_data import learner_spec
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.dataset_cli import generate
from rillet.pipelines.metrics import read_jsonl
from rillet.pipelines.online import train_online

REPLAY = ReplayConfig(batch_size=8, n_step=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demos") / "cartpole")
    generate("CartPole-v1", out, episodes=6, num_envs=2, seed=3, progress=False)
    return out


def test_batches_mix_demonstration_rows_at_the_fraction(data):
    spec = learner_spec(data, "train", get_agent("dqn"), DQNConfig())
    signature = transition_signature(spec)
    server = make_server([make_table("transitions", signature, sampler="prioritized", max_size=100),
                          demo.demo_table(signature, 1000)])
    address = f"127.0.0.1:{server.port}"
    try:
        inserted = demo.insert_demonstrations(address, demo.DEMO_TABLE, [data], "dqn", DQNConfig(), REPLAY, 0.99)
        steps = sum(len(e["steps"]["reward"]) for e in rlds_episodes(data))
        assert inserted == steps - 6  # one transition per step but the last of each episode
        with reverb.Client(address).trajectory_writer(1) as writer:  # replay items marked by reward 7
            for i in range(20):
                writer.append({**{k: np.zeros(s.shape, s.dtype.as_numpy_dtype) for k, s in signature.items()
                                  if k != "extras"}, "reward": np.float32(7), "extras": {}})
                item = {k: c[-1] for k, c in writer.history.items() if k != "extras"}
                writer.create_item("transitions", 1.0, {**item, "extras": {}})
        rows = demo.demo_batch_size(REPLAY.batch_size, 0.25)
        replay = replay_stage.sampled_batches(address, "transitions", REPLAY.batch_size - rows, lambda: True)
        demo_obs = {tuple(o) for e in rlds_episodes(data) for o in e["steps"]["observation"]}
        for batch, _ in zip(demo.mixed_batches(replay, address, rows), range(5)):
            assert batch["demo"].tolist() == [False] * 6 + [True] * 2 and len(batch["key"]) == 8
            assert (batch["data"]["reward"][:6] == 7).all()
            assert all(tuple(o) in demo_obs for o in batch["data"]["observation"][6:])
    finally:
        server.stop()
    with pytest.raises(ConfigError, match="at least one row"):
        demo.demo_batch_size(8, 0.01)


def test_online_dqn_samples_the_configured_fraction_of_demonstrations(data, tmp_path):
    config = OnlineConfig(agent="dqn", env_id="CartPole-v1", total_env_steps=400, eval_every_steps=0, eval_episodes=2,
                          progress=False, run_dir=str(tmp_path / "run"), learner=DQNConfig(hidden_sizes=(16,)),
                          replay=ReplayConfig(batch_size=8, min_size_to_sample=50, samples_per_insert=4.0,
                                              demonstrations=(data,), demo_fraction=0.25, sampler="prioritized",
                                              importance_exponent=0.5),
                          actor=ActorConfig(num_envs=2))
    summary = train_online(config)
    learner = [r for r in read_jsonl(summary["metrics"]) if "learner/demo_fraction" in r]
    assert summary["updates"] > 50 and learner and {r["learner/demo_fraction"] for r in learner} == {0.25}
    with pytest.raises(ConfigError, match="demo-fraction"):
        ReplayConfig(demo_fraction=0.5).validate()
