"""Behaviour transfer (`pipelines.transfer`) with real runs: a tiny DQN run on CartPole is the pre-trained policy.
The exploitation candidate executes the pre-trained policy's greedy action in the real environment while replay
records the extra action; fine-tuning starts from the checkpoint's weights (and refuses another agent or other
network shapes); a pre-trained run of another environment's spec is refused; a downstream exploit run loads
through `load_policy` as its candidate evaluator; a reward-free NGU run loads as a policy; and the command line
runs, logs the transfer metrics, resumes, and refuses a resume with other transfer settings."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from rillet.actors.actor_loop import envpool_actor
from rillet.actors.envpool_env import BatchedEnv, env_step_spec
from rillet.errors import CheckpointError, ConfigError, SpecMismatchError
from rillet.learners import dqn, ngu
from rillet.learners.agents import ActorParts, get_agent
from rillet.pipelines.cli import main
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.online import agent_spec, train_online
from rillet.pipelines.policy_loader import load_policy
from rillet.pipelines.transfer import TransferConfig, finetune_state, pretrained_loader, transfer_actor

SMALL_DQN = dqn.DQNConfig(hidden_sizes=(8,), learning_rate=1e-2)
SMALL_REPLAY = ReplayConfig(min_size_to_sample=100, batch_size=16, samples_per_insert=1.0)


def dqn_config(run_dir, **kw) -> OnlineConfig:
    base = dict(env_id="CartPole-v1", total_env_steps=400, eval_every_steps=0, eval_episodes=2,
                checkpoint_every_updates=50, run_dir=str(run_dir), progress=False, learner=SMALL_DQN,
                replay=SMALL_REPLAY, actor=ActorConfig(num_envs=4))
    return OnlineConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def pre(tmp_path_factory) -> str:
    """The pre-trained run: a real short DQN run on CartPole."""
    config = dqn_config(tmp_path_factory.mktemp("pre") / "run")
    train_online(config)
    return config.run_dir


def pre_greedy(run_dir: str, observation) -> np.ndarray:
    loaded = load_policy(run_dir, env_step_spec("CartPole-v1"), 1)
    return np.asarray(dqn.q_values(loaded.params, observation)).argmax(-1)


def test_the_candidate_action_executes_the_pretrained_action_in_the_environment(pre):
    """Environment 0's own policy always chooses the extra action 2, environment 1's always action 1: replay
    records 2 and 1; the environment executes the pre-trained greedy action and 1 (checked against a
    second pool of the same seed stepped with those actions)."""
    b, env_spec = 2, env_step_spec("CartPole-v1")
    transfer = TransferConfig(checkpoint=pre, mode="exploit")
    own = ActorParts(lambda p, obs, s, k: (np.array([2, 1], np.int32), {}, s), {"epsilon": np.zeros(b, np.float32)})
    parts = transfer_actor(transfer, own, pretrained_loader(transfer, env_spec), env_spec, b)
    env, twin = BatchedEnv("CartPole-v1", b, seed=3), BatchedEnv("CartPole-v1", b, seed=3)
    steps = list(envpool_actor(env, parts.policy, lambda: None, parts.actor_state, seed=0, observe=parts.observe,
                               max_ticks=30))
    env.close()
    twin_out = twin.reset()
    for step in steps:
        extras = step["extras"]
        np.testing.assert_array_equal(step["observation"], twin_out.observation)
        np.testing.assert_array_equal(step["action"], [2, 1])
        np.testing.assert_array_equal(extras["chose_pretrained"], [True, False])
        np.testing.assert_array_equal(extras["executed_action"], [pre_greedy(pre, step["observation"])[0], 1])
        np.testing.assert_array_equal(extras["in_flight"], False)
        twin_out = twin.step(extras["executed_action"])
    twin.close()


def test_with_both_flight_steps_record_the_candidate_and_execute_the_pretrained_action(pre):
    """mode both: the own policy always chooses action 1; flights (epsilon 0.5) record the extra action 2 with
    behaviour probability 1 and execute the pre-trained greedy action; the other steps record and execute 1."""
    b, env_spec = 3, env_step_spec("CartPole-v1")
    transfer = TransferConfig(checkpoint=pre, mode="both", flight_mean_length=3.0)
    own = ActorParts(lambda p, obs, s, k: (np.ones(b, np.int32), {}, s), {"epsilon": np.full(b, 0.5, np.float32)})
    parts = transfer_actor(transfer, own, pretrained_loader(transfer, env_spec), env_spec, b)
    env = BatchedEnv("CartPole-v1", b, seed=4)
    steps = list(envpool_actor(env, parts.policy, lambda: None, parts.actor_state, seed=0, observe=parts.observe,
                               max_ticks=40))
    env.close()
    flying = np.stack([s["extras"]["in_flight"] for s in steps])
    assert flying.any() and (~flying).any()
    for step in steps:
        f, extras = step["extras"]["in_flight"], step["extras"]
        np.testing.assert_array_equal(step["action"], np.where(f, 2, 1))
        np.testing.assert_array_equal(extras["executed_action"], np.where(f, pre_greedy(pre, step["observation"]), 1))
        np.testing.assert_array_equal(extras["behaviour_prob"], 1.0)
        np.testing.assert_array_equal(extras["chose_pretrained"], False)


def test_the_downstream_spec_has_one_action_more_and_the_transfer_extras(pre, tmp_path):
    config = dqn_config(tmp_path / "run", transfer=TransferConfig(checkpoint=pre, mode="both"))
    spec = agent_spec(config)
    assert spec.num_actions == 3 and {"in_flight", "executed_action", "chose_pretrained"} <= set(spec.extras)
    explore = agent_spec(dataclasses.replace(config, transfer=TransferConfig(checkpoint=pre, mode="explore")))
    assert explore.num_actions == 2 and "in_flight" in explore.extras and "executed_action" not in explore.extras
    assert agent_spec(dqn_config(tmp_path)).num_actions == 2


def test_finetune_starts_from_the_checkpoints_weights(pre, tmp_path):
    agent, config = get_agent("dqn"), dqn_config(tmp_path / "run", transfer=TransferConfig(pre, "none", True))
    fresh = agent.init(jax.random.PRNGKey(5), agent_spec(config), config.learner)
    tuned = finetune_state(fresh, "dqn", config.transfer)
    loaded = load_policy(pre, env_step_spec("CartPole-v1"), 1)
    for a, b in zip(jax.tree.leaves(tuned.online), jax.tree.leaves(loaded.params)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(tuned.target), jax.tree.leaves(fresh.target)):
        assert np.shape(a) == np.shape(b)
    for a, b in zip(jax.tree.leaves(tuned.opt_state), jax.tree.leaves(fresh.opt_state)):
        np.testing.assert_array_equal(a, b)  # the optimiser starts fresh
    with pytest.raises(ConfigError, match="a dqn run"):
        finetune_state(fresh, "bootdqn", config.transfer)
    wider = dataclasses.replace(SMALL_DQN, hidden_sizes=(16,))
    with pytest.raises(ConfigError, match="do not fit"):
        finetune_state(agent.init(jax.random.PRNGKey(0), agent_spec(config), wider), "dqn", config.transfer)
    exploit = dataclasses.replace(config, transfer=TransferConfig(pre, "exploit", True))
    with pytest.raises(ConfigError, match="do not fit"):  # the candidate's extra Q output
        finetune_state(agent.init(jax.random.PRNGKey(0), agent_spec(exploit), SMALL_DQN), "dqn", exploit.transfer)


def test_bad_transfer_settings_are_refused(pre, tmp_path):
    with pytest.raises(ConfigError, match="mode"):
        TransferConfig(pre, "sideways").validate()
    with pytest.raises(ConfigError, match="finetune"):
        TransferConfig(pre, "none").validate()
    with pytest.raises(ConfigError, match="checkpoint"):
        TransferConfig("", "both", finetune=True).validate()
    with pytest.raises(CheckpointError):
        train_online(dqn_config(tmp_path / "a", transfer=TransferConfig(str(tmp_path / "nowhere"), "explore")))
    with pytest.raises(SpecMismatchError, match="Acrobot|CartPole"):
        train_online(dqn_config(tmp_path / "b", env_id="Acrobot-v1", transfer=TransferConfig(pre, "explore")))


def test_a_reward_free_ngu_run_loads_as_a_policy(tmp_path):
    """A real reward-free NGU run: it trains, checkpoints, and loads through load_policy as its exploratory
    evaluation policy, whose core is fed a previous reward of 0."""
    learner = ngu.NGUConfig(burn_in=2, trace_length=4, lstm_size=8, hidden_sizes=(8,), novelty_hidden_sizes=(8,),
                            embedding_size=4, rnd_output_size=4, num_policies=2, memory_capacity=64,
                            reward_free=True, eval_policy_index=1)
    config = OnlineConfig(agent="ngu", learner=learner, env_id="CartPole-v1", total_env_steps=240,
                          eval_every_steps=0, eval_episodes=1, checkpoint_every_updates=10, progress=False,
                          run_dir=str(tmp_path / "ngu"), actor=ActorConfig(num_envs=4),
                          replay=ReplayConfig(min_size_to_sample=8, batch_size=4, samples_per_insert=1.0,
                                              sequence_period=3))
    train_online(config)
    loaded = load_policy(config.run_dir, env_step_spec("CartPole-v1"), 2)
    assert loaded.agent == "ngu" and loaded.config.learner.reward_free
    env = BatchedEnv("CartPole-v1", 2, seed=0)
    steps = list(envpool_actor(env, loaded.parts.policy, lambda: loaded.params, loaded.parts.actor_state, seed=0,
                               observe=loaded.parts.observe, max_ticks=12))
    env.close()
    assert all(np.all(s["extras"]["prev_reward"] == 0) for s in steps)
    assert all(np.all(s["extras"]["policy_index"] == 1) for s in steps)


def test_a_downstream_exploit_run_loads_as_its_candidate_evaluator(pre, tmp_path):
    config = dqn_config(tmp_path / "down", transfer=TransferConfig(pre, "exploit"))
    train_online(config)
    loaded = load_policy(config.run_dir, env_step_spec("CartPole-v1"), 16)
    observation = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    action, extras, _ = loaded.parts.policy(loaded.params, observation, loaded.parts.actor_state,
                                            jax.random.PRNGKey(0))
    own = np.asarray(dqn.q_values(loaded.params, observation)).argmax(-1)
    np.testing.assert_array_equal(action, own)
    np.testing.assert_array_equal(extras["executed_action"], np.where(own == 2, pre_greedy(pre, observation), own))


def test_the_command_line_trains_logs_resumes_and_refuses_other_transfer_settings(pre, tmp_path, capsys):
    run_dir = str(tmp_path / "cli")
    args = ["train-online", "dqn", "--env-id", "CartPole-v1", "--run-dir", run_dir, "--no-progress",
            "--total-env-steps", "600", "--eval-every-steps", "0", "--eval-episodes", "2", "--actor.num-envs", "4",
            "--dqn.hidden-sizes", "8", "--replay.min-size-to-sample", "100", "--replay.batch-size", "16",
            "--replay.samples-per-insert", "16", "--checkpoint-every-updates", "100",
            "--transfer.checkpoint", pre, "--transfer.mode", "both", "--transfer.flight-mean-length", "4"]
    assert main(args) == 0
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    fractions = [r for r in rows if "actor/flight_fraction" in r]
    assert fractions and all(0 <= r["actor/flight_fraction"] <= 1 for r in fractions)
    assert all(0 <= r["actor/candidate_fraction"] <= 1 for r in fractions)
    assert max(r["actor/flight_fraction"] for r in fractions) > 0
    with open(os.path.join(run_dir, "config.json")) as f:
        assert json.load(f)["transfer"]["mode"] == "both"
    steps = json.load(open(os.path.join(run_dir, "summary.json")))["env_steps"]
    assert main([*args[:-6], "--total-env-steps", "800", *args[-6:]]) == 0  # resume with a larger budget
    assert json.load(open(os.path.join(run_dir, "summary.json")))["env_steps"] > steps
    assert main([*args[:-3], "explore", *args[-2:]]) == 2
    assert "transfer.mode: 'both' -> 'explore'" in capsys.readouterr().err
