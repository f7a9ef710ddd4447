"""Checkpoint/resume: train N updates, checkpoint, train M more; restore from the checkpoint in a
fresh learner and train M more: the same metrics and parameters, bit for bit (CPU)."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import pytest

from rillet.actors.actor_loop import envpool_actor
from rillet.actors.envpool_env import BatchedEnv
from rillet.actors.policies import random_policy
from rillet.learners import dqn
from rillet.pipelines.checkpointing import Checkpointer
from rillet.errors import CheckpointError
from rillet.pipelines.config import OnlineConfig

CONFIG = dqn.DQNConfig(hidden_sizes=(32, 32), target_update_period=7)


def one_step_transitions(num_envs=4, ticks=150, gamma=0.99):
    """Real CartPole data: one-step transitions (o_t, a_t, r_t, gamma*d_t, o_{t+1}) of non-last steps."""
    env = BatchedEnv("CartPole-v1", num_envs, seed=0)
    steps = list(envpool_actor(env, random_policy(2), lambda: None, None, seed=0, max_ticks=ticks))
    out = {k: [] for k in ("observation", "action", "reward", "discount", "next_observation")}
    for s, nxt in zip(steps[:-1], steps[1:]):
        keep = ~s["is_last"]
        out["observation"].append(s["observation"][keep])
        out["action"].append(s["action"][keep])
        out["reward"].append(s["reward"][keep])
        out["discount"].append(gamma * s["discount"][keep])
        out["next_observation"].append(nxt["observation"][keep])
    return {k: np.concatenate(v).astype(np.int32 if k == "action" else np.float32) for k, v in out.items()}


def batch_for(data, update_index, seed=0, size=32):
    """The batch of update `update_index`: a deterministic function of (seed, index)."""
    idx = np.random.default_rng([seed, update_index]).integers(0, len(data["reward"]), size)
    return {k: v[idx] for k, v in data.items()}


def train(state, data, start, count):
    history = []
    for u in range(start, start + count):
        state, m = dqn.update(state, batch_for(data, u), CONFIG)
        history.append({k: np.asarray(v) for k, v in m.items()})
    return state, history


def test_resume_is_bit_identical(tmp_path):
    data = one_step_transitions()
    spec = BatchedEnv("CartPole-v1", 1, seed=0).spec
    fingerprint = dataclasses.asdict(OnlineConfig(learner=CONFIG))
    n, m = 20, 15

    state = dqn.init(jax.random.PRNGKey(0), spec, CONFIG)
    state, _ = train(state, data, 0, n)
    ckpt = Checkpointer(str(tmp_path / "ckpt"), fingerprint)
    ckpt.save(n, state, {"updates": n, "env_steps": 1234})
    ckpt.close()
    straight, history_a = train(state, data, n, m)

    fresh = Checkpointer(str(tmp_path / "ckpt"), fingerprint)
    template = dqn.init(jax.random.PRNGKey(99), spec, CONFIG)  # different init: all must come from disk
    restored, meta = fresh.restore(template)
    assert meta["updates"] == n and meta["env_steps"] == 1234
    resumed, history_b = train(restored, data, meta["updates"], m)

    for a, b in zip(history_a, history_b):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    leaves_a = jax.tree.leaves(jax.tree.map(np.asarray, straight))
    leaves_b = jax.tree.leaves(jax.tree.map(np.asarray, resumed))
    assert len(leaves_a) == len(leaves_b)
    for a, b in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(a, b)
    assert int(resumed.steps) == n + m


def test_a_step_saved_again_keeps_the_newer_counters_and_actor_state(tmp_path):
    """A run that ends (or resumes and ends) with no update since its last checkpoint saves the same
    step again: the newer counters and actors' carry win, in this process and after a reopen."""
    ckpt = Checkpointer(str(tmp_path / "ckpt"), {"same": True})
    ckpt.save(5, {"w": jnp.zeros(2)}, {"env_steps": 240}, actor={"steps": np.array(240)})
    ckpt.save(5, {"w": jnp.ones(2)}, {"env_steps": 360}, actor={"steps": np.array(360)})
    assert ckpt.steps() == [5]
    ckpt.close()
    reopened = Checkpointer(str(tmp_path / "ckpt"), {"same": True})
    state, meta = reopened.restore({"w": jnp.zeros(2)})
    assert meta["env_steps"] == 360 and np.array_equal(state["w"], np.ones(2))
    assert int(reopened.restore_actor()["steps"]) == 360


def test_a_checkpoint_of_another_state_layout_is_refused(tmp_path):
    """Same config fingerprint, but an array whose shape changed (e.g. a scalar that became a vector):
    a clear CheckpointError, not a state that fails later."""
    spec = BatchedEnv("CartPole-v1", 1, seed=0).spec
    state = dqn.init(jax.random.PRNGKey(0), spec, CONFIG)
    ckpt = Checkpointer(str(tmp_path / "ckpt"), {"same": True})
    ckpt.save(1, state, {"updates": 1})
    ckpt.close()
    template = eqx.tree_at(lambda s: s.steps, state, jnp.zeros((2,), jnp.int32))
    with pytest.raises(CheckpointError, match="state layout.*shape"):
        Checkpointer(str(tmp_path / "ckpt"), {"same": True}).restore(template)


def test_retired_fingerprint_keys_are_ignored_only_where_named(tmp_path):
    """A checkpoint whose stored fingerprint carries a key an older version wrote (here a nested
    "attention") resumes when that key is retired, and is refused otherwise or when a live key differs."""
    spec = BatchedEnv("CartPole-v1", 1, seed=0).spec
    state = dqn.init(jax.random.PRNGKey(0), spec, CONFIG)
    old = {"lr": 1e-3, "network": {"width": 8, "attention": None}}
    ckpt = Checkpointer(str(tmp_path / "ckpt"), old)
    ckpt.save(1, state, {"updates": 1})
    ckpt.close()
    now = {"lr": 1e-3, "network": {"width": 8}}
    restored, meta = Checkpointer(str(tmp_path / "ckpt"), now, retired_keys=("attention",)).restore(state)
    assert meta["updates"] == 1
    assert jnp.array_equal(restored.steps, state.steps)
    with pytest.raises(CheckpointError, match="different config"):
        Checkpointer(str(tmp_path / "ckpt"), now).restore(state)
    with pytest.raises(CheckpointError, match="different config"):
        Checkpointer(str(tmp_path / "ckpt"), {"lr": 1e-3, "network": {"width": 16}},
                     retired_keys=("attention",)).restore(state)
