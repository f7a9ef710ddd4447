"""The Q-network ensemble: stacked members, fixed priors, per-member double-Q targets in DQN."""

import equinox as eqx
import jax
import numpy as np
import pytest

from rillet.errors import ConfigError
from rillet.learners import dqn, value_ops
from rillet.learners.networks.ensemble import Ensemble, ensemble, member_outputs
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.learners.networks.mlp import MLP

CARTPOLE = StepSpec(ArraySpec((4,), "float32"), ArraySpec((), "int32"), num_actions=2, env_id="CartPole-v1")

KEY = jax.random.PRNGKey(0)
OBS = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)


def make_batch(batch_size: int = 32) -> dict:
    """Random n-step transitions for CARTPOLE: observation [B, 4], action [B], ..."""
    rng = np.random.default_rng(2)
    return {"observation": rng.normal(size=(batch_size, 4)).astype(np.float32),
            "action": rng.integers(0, 2, batch_size).astype(np.int32),
            "reward": rng.normal(size=batch_size).astype(np.float32),
            "discount": np.where(rng.random(batch_size) < 0.2, 0.0, 0.97).astype(np.float32),
            "next_observation": rng.normal(size=(batch_size, 4)).astype(np.float32)}


def _mlp(key):
    return MLP(4, (8,), 2, key)


def _member(stacked: eqx.Module, k: int) -> eqx.Module:
    """Member k of a stacked module, as a plain module."""
    return jax.tree.map(lambda x: x[k] if eqx.is_array(x) else x, stacked)


def test_members_differ_and_the_call_is_their_mean():
    net = ensemble(_mlp, KEY, 3)
    out = np.asarray(net.members(OBS))
    assert out.shape == (3, 6, 2)
    assert not np.allclose(out[0], out[1]) and not np.allclose(out[1], out[2])
    for k in range(3):  # one vmapped call gives what each member gives alone
        np.testing.assert_allclose(out[k], np.asarray(_member(net.networks, k)(OBS)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(net(OBS)), out.mean(axis=0), rtol=1e-6, atol=1e-6)


def test_priors_add_a_scaled_fixed_network():
    net = ensemble(_mlp, KEY, 2, prior_scale=3.0)
    plain = np.asarray(eqx.tree_at(lambda e: e.priors, net, None, is_leaf=lambda x: x is None).members(OBS))
    for k in range(2):
        prior = np.asarray(_member(net.priors, k)(OBS))
        np.testing.assert_allclose(np.asarray(net.members(OBS))[k], plain[k] + 3.0 * prior, rtol=1e-5, atol=1e-5)


def test_member_outputs_of_a_single_network_is_one_member():
    net = _mlp(KEY)
    np.testing.assert_array_equal(np.asarray(member_outputs(net, OBS)), np.asarray(net(OBS))[None])


@pytest.mark.parametrize("size, scale", [(0, 0.0), (2, -1.0)])
def test_bad_ensemble_arguments_are_config_errors(size, scale):
    with pytest.raises(ConfigError, match="ensemble_size|prior_scale"):
        ensemble(_mlp, KEY, size, scale)
    with pytest.raises(ConfigError, match="ensemble_size|prior_scale"):
        dqn.DQNConfig(ensemble_size=size, prior_scale=scale).validate()


CONFIG = dqn.DQNConfig(hidden_sizes=(16,), ensemble_size=3, prior_scale=2.0, target_update_period=1000)


def test_dqn_ensemble_update_trains_members_not_priors():
    state = dqn.init(KEY, CARTPOLE, CONFIG)
    assert isinstance(state.online, Ensemble) and state.online.size == 3
    new, metrics = dqn.update(state, make_batch(), CONFIG)
    for before, after in zip(jax.tree.leaves(state.online.priors), jax.tree.leaves(new.online.priors)):
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
    for before, after in zip(jax.tree.leaves(state.online.networks), jax.tree.leaves(new.online.networks)):
        assert all(not np.array_equal(np.asarray(before[k]), np.asarray(after[k])) for k in range(3))
    assert metrics["td_abs"].shape == (32,) and np.isfinite(float(metrics["loss"]))


def test_each_member_trains_on_its_own_double_q_target():
    state = dqn.init(KEY, CARTPOLE, CONFIG)
    batch = make_batch(8)
    _, metrics = dqn.update(state, batch, CONFIG)
    q = np.asarray(state.online.members(batch["observation"]))
    q_next_online = np.asarray(state.online.members(batch["next_observation"]))
    q_next_target = np.asarray(state.target.members(batch["next_observation"]))
    td = np.zeros((3, 8))
    for k in range(3):  # a loop reference: member k's own selector and its own target values
        for i in range(8):
            a_star = np.argmax(q_next_online[k, i])
            target = batch["reward"][i] + batch["discount"][i] * q_next_target[k, i, a_star]
            td[k, i] = target - q[k, i, batch["action"][i]]
    np.testing.assert_allclose(np.asarray(metrics["td_abs"]), np.abs(td).mean(axis=0), rtol=1e-4, atol=1e-4)
    one = value_ops.double_q_learning(q[1, 0], batch["action"][0], batch["reward"][0], batch["discount"][0],
                                      q_next_target[1, 0], q_next_online[1, 0])
    np.testing.assert_allclose(float(one), td[1, 0], rtol=1e-5, atol=1e-5)


def test_actors_act_on_the_members_mean():
    state = dqn.init(KEY, CARTPOLE, CONFIG)
    mean = np.asarray(state.online.members(OBS)).mean(axis=0)
    np.testing.assert_allclose(np.asarray(dqn.q_values(state.online, OBS)), mean, rtol=1e-5, atol=1e-5)


def test_member_acting_follows_one_member_per_episode():
    from rillet.actors.policies import member_epsilon_greedy, member_observe

    class Members(eqx.Module):  # K = 3 members whose greedy actions are 0, 1, 1 in every state
        def __call__(self, obs):
            return jax.numpy.broadcast_to(jax.numpy.array([[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 2.0]]]),
                                          (3, obs.shape[0], 2))

    policy = member_epsilon_greedy(lambda net, obs: net(obs))
    state = {"epsilon": np.zeros(64, np.float32), "member": np.zeros(64, np.int32), "is_first": np.ones(64, bool)}
    action, _, state = policy(Members(), np.zeros((64, 4), np.float32), state, jax.random.PRNGKey(0))
    members = np.asarray(state["member"])
    assert set(members) == {0, 1, 2}  # 64 draws cover the three members
    np.testing.assert_array_equal(np.asarray(action), np.where(members == 0, 0, 1))
    first = np.arange(64) < 32  # episodes start again in the first half only

    class Output:
        pass

    out = Output()
    out.first = first
    state = member_observe(state, out)
    _, _, after = policy(Members(), np.zeros((64, 4), np.float32), state, jax.random.PRNGKey(1))
    after = np.asarray(after["member"])
    np.testing.assert_array_equal(after[~first], members[~first])  # mid-episode: the same member
    assert np.any(after[first] != members[first])  # new episodes: drawn again


def test_dqn_actor_acts_by_member_when_asked():
    from rillet.learners.agents import get_agent

    config = dqn.DQNConfig(hidden_sizes=(8,), ensemble_size=3, ensemble_acting="member")
    parts = get_agent("dqn").actor(CARTPOLE, config, 4, {"epsilon": np.zeros(4, np.float32)})
    assert set(parts.actor_state) == {"epsilon", "member", "is_first"} and parts.observe is not None
    with pytest.raises(ConfigError, match="ensemble_acting"):
        dqn.DQNConfig(ensemble_acting="vote").validate()
