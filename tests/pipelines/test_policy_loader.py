"""`load_policy`: a tiny real DQN run (the online runner) loads as a frozen greedy policy whose actions are
the argmax of the restored learner's Q; a checkpoints/<step> folder loads that step; a run of another
environment's spec, a folder without config.json, a corrupt config.json and a run without checkpoints are
refused with typed errors; a recurrent agent's loaded policy steps its core like the network does."""

import dataclasses
import json
import os
import shutil

import equinox as eqx
import jax
import numpy as np
import pytest

from rillet.actors.envpool_env import EnvOutput, env_step_spec
from rillet.errors import CheckpointError, SpecMismatchError
from rillet.learners import dqn
from rillet.pipelines.checkpointing import Checkpointer
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.online import train_online
from rillet.pipelines.policy_loader import LoadedPolicy, load_policy

OBS = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real DQN run on CartPole: about 30 updates, a checkpoint every 10."""
    config = OnlineConfig(env_id="CartPole-v1", total_env_steps=600, eval_every_steps=0, eval_episodes=1,
                          checkpoint_every_updates=10, run_dir=str(tmp_path_factory.mktemp("dqn") / "run"),
                          progress=False, learner=dqn.DQNConfig(hidden_sizes=(8,), learning_rate=1e-2),
                          replay=ReplayConfig(min_size_to_sample=100, batch_size=16, samples_per_insert=1.0),
                          actor=ActorConfig(num_envs=4))
    train_online(config)
    return config


def restored(config: OnlineConfig, step: int | None = None):
    """The learner state of a checkpoint, restored here without the loader."""
    ckpt = Checkpointer(os.path.join(config.run_dir, "checkpoints"), config.learner_fingerprint())
    try:
        template = dqn.init(jax.random.PRNGKey(123), env_step_spec(config.env_id), config.learner)
        return ckpt.restore(template, step)[0], ckpt.steps()
    finally:
        ckpt.close()


def same(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def greedy_actions(loaded: LoadedPolicy, observation) -> np.ndarray:
    action, _, _ = loaded.parts.policy(loaded.params, observation, loaded.parts.actor_state, jax.random.PRNGKey(0))
    return np.asarray(action)


def test_loaded_policy_acts_greedily_in_the_latest_checkpoint(run):
    loaded = load_policy(run.run_dir, env_step_spec("CartPole-v1"), num_envs=16)
    state, steps = restored(run)
    assert loaded.agent == "dqn" and loaded.step == steps[-1] and loaded.config == run
    assert loaded.run_dir == os.path.abspath(run.run_dir)
    expected = np.asarray(dqn.q_values(state.online, OBS)).argmax(-1)
    np.testing.assert_array_equal(greedy_actions(loaded, OBS), expected)
    assert same(loaded.params, state.online)


def test_a_checkpoint_folder_loads_that_step(run):
    _, steps = restored(run)
    assert len(steps) >= 2
    first = steps[0]
    loaded = load_policy(os.path.join(run.run_dir, "checkpoints", str(first)), env_step_spec("CartPole-v1"), 4)
    state, _ = restored(run, first)
    latest, _ = restored(run)
    assert loaded.step == first
    assert same(loaded.params, state.online) and not same(loaded.params, latest.online)
    np.testing.assert_array_equal(greedy_actions(loaded, OBS), np.asarray(dqn.q_values(state.online, OBS)).argmax(-1))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_policy(os.path.join(run.run_dir, "checkpoints", "999999"), env_step_spec("CartPole-v1"), 4)


def test_another_environments_spec_is_refused(run):
    with pytest.raises(SpecMismatchError, match=r"observation: this environment has \(6,\) float32.*act in the run"):
        load_policy(run.run_dir, env_step_spec("Acrobot-v1"), 2)
    with pytest.raises(SpecMismatchError, match=r"observation: this environment has \(2,\)"):
        load_policy(run.run_dir, env_step_spec("CartPole-v1", observation_indices=(0, 2)), 2)
    with pytest.raises(SpecMismatchError, match="num_actions: this environment has 3"):
        load_policy(run.run_dir, dataclasses.replace(env_step_spec("CartPole-v1"), num_actions=3), 2)
    same_layout = dataclasses.replace(env_step_spec("CartPole-v1"), env_id="SomeOtherCartPole")
    assert load_policy(run.run_dir, same_layout, 2).agent == "dqn"  # the spec decides, not the id


def test_bad_run_directories_are_refused(run, tmp_path):
    spec = env_step_spec("CartPole-v1")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_policy(str(tmp_path), spec, 1)
    copy = str(tmp_path / "copy")
    shutil.copytree(run.run_dir, copy)
    with open(os.path.join(copy, "config.json"), "w") as f:
        f.write('{"agent": "dqn", "replay": ')
    with pytest.raises(CheckpointError, match="cannot be read as a run's config.*restore it"):
        load_policy(copy, spec, 1)
    with open(os.path.join(copy, "config.json"), "w") as f:
        json.dump({"agent": "dqn"}, f)  # valid JSON, not a config
    with pytest.raises(CheckpointError, match="cannot be read as a run's config"):
        load_policy(copy, spec, 1)
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(os.path.join(run.run_dir, "config.json"), empty / "config.json")
    with pytest.raises(CheckpointError, match="has no checkpoints/ folder"):
        load_policy(str(empty), spec, 1)
    assert not (empty / "checkpoints").exists(), "the loader creates nothing in a run directory"
    (empty / "checkpoints").mkdir()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_policy(str(empty), spec, 1)


def test_a_recurrent_policy_steps_from_the_initial_state(tmp_path):
    """R2D2 (a checkpoint of a perturbed init): the loaded evaluator's actions over a fixed observation
    sequence are the argmax of the network's "q" head stepped from its initial state, fed the previous
    greedy action and a zero reward."""
    from rillet.learners import r2d2
    from rillet.pipelines.online import agent_spec

    learner = r2d2.R2D2Config(burn_in=2, trace_length=4, lstm_size=8, hidden_sizes=(8,))
    config = OnlineConfig(agent="r2d2", env_id="CartPole-v1", learner=learner, run_dir=str(tmp_path / "run"))
    os.makedirs(config.run_dir)
    with open(os.path.join(config.run_dir, "config.json"), "w") as f:
        f.write(config.to_json())
    state = r2d2.init(jax.random.PRNGKey(7), agent_spec(config), learner)  # not the run seed's init
    ckpt = Checkpointer(os.path.join(config.run_dir, "checkpoints"), config.learner_fingerprint())
    ckpt.save(5, state, {"env_steps": 0, "updates": 5})
    ckpt.close()
    b, steps = 3, 6
    loaded = load_policy(config.run_dir, env_step_spec("CartPole-v1"), b)
    net, step = state.online, eqx.filter_jit(lambda n, *args: n.step(*args))
    obs = np.random.default_rng(1).normal(size=(steps, b, 4)).astype(np.float32)
    actor_state, core, prev = loaded.parts.actor_state, net.initial_state(b), np.zeros(b, np.int32)
    for t in range(steps):
        first = np.full(b, t == 0)
        out = EnvOutput(obs[t], np.zeros(b, np.float32), np.ones(b, np.float32), first, np.zeros(b, bool),
                        np.zeros(b, bool))
        actor_state = loaded.parts.observe(actor_state, out)
        action, _, actor_state = loaded.parts.policy(loaded.params, obs[t], actor_state, jax.random.PRNGKey(t))
        inputs = {"prev_action": prev, "prev_reward": np.zeros(b, np.float32)}
        _, heads, core = step(net, obs[t], inputs, first, core)
        prev = np.asarray(heads["q"]).argmax(-1).astype(np.int32)
        np.testing.assert_array_equal(np.asarray(action), prev)


def test_an_offline_pac_run_loads_as_its_tasks_evaluation_policy(tmp_path):
    """A `rillet train-offline` run directory (PAC, one task; its checkpoint written here, not trained, to
    keep the test cheap): the task whose spec matches, acting by the run's eval_action with the restored
    network; a spec no task has is refused."""
    from rillet.actors.policies import discretised_policy
    from rillet.learners import pac
    from rillet.pipelines.dataset_cli import generate
    from rillet.pipelines.offline import OfflineConfig, open_tasks

    data = str(tmp_path / "pointmass")
    generate("PointMassEasy-v1", data, episodes=2, num_envs=2, max_episode_steps=5, progress=False)
    config = OfflineConfig(data=(data,), size="test", batch_size=4, eval_action="mode", run_dir=str(tmp_path / "run"))
    os.makedirs(config.run_dir)
    with open(os.path.join(config.run_dir, "config.json"), "w") as f:
        f.write(config.to_json())
    tasks = open_tasks(config.data)
    state = pac.init(jax.random.PRNGKey(3), [t.spec for t in tasks], config.pac_config())
    ckpt = Checkpointer(os.path.join(config.run_dir, "checkpoints"), config.fingerprint())
    ckpt.save(2, state, {"step": 2, "loader_states": []})
    ckpt.close()
    loaded = load_policy(config.run_dir, env_step_spec("PointMassEasy-v1"), 2)
    assert loaded.agent == "pac" and loaded.step == 2 and loaded.spec.env_id == "PointMassEasy-v1"
    assert same(loaded.params, state.online)
    obs = np.random.default_rng(2).normal(size=(5, tasks[0].obs_size)).astype(np.float32)
    expected, _, _ = discretised_policy(0, config.pac_config().num_bins, "mode")(state.online, obs, None,
                                                                                 jax.random.PRNGKey(0))
    np.testing.assert_array_equal(greedy_actions(loaded, obs), np.asarray(expected))
    with pytest.raises(SpecMismatchError, match="No task of the offline run"):
        load_policy(config.run_dir, env_step_spec("Pendulum-v1"), 1)
