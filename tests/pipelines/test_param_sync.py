"""The params channel on a real Reverb server: the learner step travels with the params, an actor of
another config refuses them, waits are bounded and say so, and a dead server is an error, not a hang."""

import time

import jax
import numpy as np
import pytest

from rillet.actors.envpool_env import env_step_spec
from rillet.datasets.reverb_tables import make_server, wait_for_server
from rillet.errors import ReplayUnreachableError
from rillet.learners import dqn
from rillet.learners.agents import get_agent
from rillet.learners.dqn import DQNConfig
from rillet.pipelines.config import ActorConfig
from rillet.pipelines.param_sync import ParamsMismatchError, ParamsPublisher, ParamsSubscriber, params_tables

FINGERPRINT = {"env_id": "CartPole-v1", "agent": "dqn", "learner": {"hidden_sizes": [8]}}


@pytest.fixture()
def served():
    spec = env_step_spec("CartPole-v1")
    network = dqn.init(jax.random.PRNGKey(0), spec, DQNConfig(hidden_sizes=(8,))).online
    server = make_server(params_tables(network))
    yield network, f"127.0.0.1:{server.port}", server
    server.stop()


def test_the_learner_step_travels_with_the_params_and_the_lag_is_counted(served):
    network, address, _ = served
    publisher = ParamsPublisher(address, FINGERPRINT)
    publisher.publish(network, 100)
    subscriber = ParamsSubscriber(address, network, FINGERPRINT, refresh_every=2)
    got = subscriber()
    assert subscriber.step == 100 and subscriber.policy_lag == 0
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(network)))
    publisher.publish(network, 160)
    subscriber()  # call 2 of 2: still the old params
    assert subscriber.step == 100
    subscriber()  # refresh
    assert subscriber.step == 160 and subscriber.policy_lag == 60


def test_params_of_a_learner_with_another_config_are_refused(served):
    network, address, _ = served
    ParamsPublisher(address, {**FINGERPRINT, "env_id": "Acrobot-v1"}).publish(network, 1)
    with pytest.raises(ParamsMismatchError, match="another environment, agent or network"):
        ParamsSubscriber(address, network, FINGERPRINT)()


def test_an_actor_before_any_learner_waits_bounded_and_says_so(served, capsys):
    network, address, _ = served
    started = time.monotonic()
    with pytest.raises(ReplayUnreachableError, match="no learner has published params"):
        ParamsSubscriber(address, network, FINGERPRINT, first_timeout_s=1.5)()
    assert time.monotonic() - started < 10
    assert "waiting for a learner to publish params" in capsys.readouterr().out


def test_a_dead_server_is_an_error_not_a_hang(served):
    network, address, server = served
    ParamsPublisher(address, FINGERPRINT).publish(network, 1)
    subscriber = ParamsSubscriber(address, network, FINGERPRINT, refresh_every=1, answer_timeout_s=1)
    subscriber()
    server.stop()
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="does not answer"):
        subscriber()
    assert time.monotonic() - started < 10


def test_an_unreachable_server_is_waited_for_bounded_with_a_message(capsys):
    started = time.monotonic()
    with pytest.raises(ReplayUnreachableError, match="no Reverb server answers at 127.0.0.1:1"):
        wait_for_server("127.0.0.1:1", timeout_s=2, who="test", poll_s=1)
    assert time.monotonic() - started < 10
    assert "test: waiting for the Reverb server at 127.0.0.1:1" in capsys.readouterr().out


def test_actor_processes_take_consecutive_members_of_one_exploration_ladder():
    agent, spec = get_agent("dqn"), env_step_spec("CartPole-v1")
    one = agent.actor_parts(spec, DQNConfig(), ActorConfig(), 8).actor_state["epsilon"]
    halves = [agent.actor_parts(spec, DQNConfig(), ActorConfig(), 4, slot=(j, 2)).actor_state["epsilon"]
              for j in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), one)


def test_act_against_a_server_of_another_environment_is_one_clear_error(capsys):
    from rillet.pipelines.cli import main
    from rillet.pipelines.config import OnlineConfig
    from rillet.pipelines.online import agent_spec, serve_replay

    config = OnlineConfig(env_id="CartPole-v1", learner=DQNConfig(hidden_sizes=(8,)))
    spec = agent_spec(config)
    server = serve_replay(config, spec, dqn.init(jax.random.PRNGKey(0), spec, config.learner).online)
    try:
        code = main(["act", "dqn", "--env-id", "Acrobot-v1", "--dqn.hidden-sizes", "8", "--replay.address",
                     f"127.0.0.1:{server.port}", "--total-env-steps", "5000"])
    finally:
        server.stop()
    assert code == 2
    assert "does not hold the items this learner expects" in capsys.readouterr().err


def test_a_stopped_server_leaves_no_directory_behind():
    import gc
    import glob

    import reverb

    before = set(glob.glob("/tmp/rillet-reverb-*"))
    server = make_server([reverb.Table.queue("q", 10)])
    assert len(set(glob.glob("/tmp/rillet-reverb-*")) - before) == 1  # Reverb's scratch checkpoint directory
    server.stop()
    del server
    gc.collect()
    assert set(glob.glob("/tmp/rillet-reverb-*")) - before == set()


def test_a_learner_starved_by_the_rate_limiter_says_so(capsys):
    import reverb
    import tensorflow as tf

    from rillet.datasets.replay_stage import sampled_batches

    table = reverb.Table("t", reverb.selectors.Uniform(), reverb.selectors.Fifo(), 100,
                         reverb.rate_limiters.MinSize(50), signature=tf.TensorSpec((), tf.float32))
    server = make_server([table])
    client = reverb.Client(f"127.0.0.1:{server.port}")
    for i in range(5):  # 5 items, while the learner may sample only from 50
        client.insert(np.float32(i), {"t": 1.0})
    deadline = time.monotonic() + 4
    try:
        batches = list(sampled_batches(f"127.0.0.1:{server.port}", "t", 4, lambda: time.monotonic() < deadline,
                                       say_every_s=1.5))
    finally:
        server.stop()
    assert batches == []
    out = capsys.readouterr().out
    assert "rillet learner: no batch of 4 for" in out and "holds 5 items (5 inserted)" in out
