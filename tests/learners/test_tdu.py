"""TDU and bootstrapped DQN: sigma on hand-made TD errors, the bonus only on the exploration members'
targets, no gradient through sigma, bootstrap masks, and the actors' and evaluator's members."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.errors import ConfigError
from rillet.learners import dqn, tdu
from tests.learners.test_ensemble import CARTPOLE, make_batch

KEY = jax.random.PRNGKey(3)
CONFIG = tdu.TDUConfig(hidden_sizes=(16,), ensemble_size=6, exploration_members=2, tdu_beta=0.5)


def test_sigma_is_the_std_over_members_of_hand_made_td_errors():
    td = jnp.array([[1.0, 0.0, 2.0], [3.0, 0.0, -2.0]])  # [K=2, B=3]
    np.testing.assert_allclose(np.asarray(tdu.td_uncertainty(td)), [1.0, 0.0, 2.0])


def test_the_bonus_is_added_to_the_exploration_members_only():
    td = jnp.array([[1.0, 2.0], [3.0, 2.0], [0.0, 0.0], [5.0, 5.0]])  # N=4: 2 exploit, 2 explore; B=2
    out, sigma = tdu.exploration_td(td, num_exploitation=2, beta=0.1)
    np.testing.assert_allclose(np.asarray(sigma), [1.0, 0.0])
    np.testing.assert_allclose(np.asarray(out[:2]), np.asarray(td[:2]))
    np.testing.assert_allclose(np.asarray(out[2:]), np.asarray(td[2:]) + 0.1 * np.array([1.0, 0.0]), rtol=1e-6)


def _grads(config: tdu.TDUConfig, batch: dict):
    state = tdu.init(KEY, CARTPOLE, config)
    params, static = eqx.partition({"q": state.online}, eqx.is_inexact_array)
    return jax.jit(jax.grad(lambda p: tdu._loss(eqx.combine(p, static), state.target, batch, config)[0]))(params)["q"]


def _member_grads(grads, members: slice) -> np.ndarray:
    return np.concatenate([np.ravel(x[members]) for x in jax.tree.leaves(grads.networks)])


def test_exploitation_members_get_no_gradient_through_sigma():
    batch = make_batch()
    base, bonus = _grads(dataclasses.replace(CONFIG, tdu_beta=0.0), batch), _grads(CONFIG, batch)
    exploit, explore = slice(0, 4), slice(4, 6)
    np.testing.assert_allclose(_member_grads(base, exploit), _member_grads(bonus, exploit), rtol=1e-6, atol=1e-7)
    assert not np.allclose(_member_grads(base, explore), _member_grads(bonus, explore))
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(bonus.priors))  # priors never train


def test_the_exploration_members_loss_is_huber_of_td_plus_beta_sigma():
    batch = make_batch()
    state = tdu.init(KEY, CARTPOLE, CONFIG)
    td_r, _ = dqn.member_td_errors(state.online, state.target, batch, CONFIG)
    sigma = np.std(np.asarray(td_r)[:4], axis=0)
    expected = np.asarray(td_r).copy()
    expected[4:] += CONFIG.tdu_beta * sigma
    huber = np.where(np.abs(expected) <= 1.0, 0.5 * expected ** 2, np.abs(expected) - 0.5)
    loss, aux = tdu._loss({"q": state.online}, state.target, batch, CONFIG)
    np.testing.assert_allclose(float(loss), huber.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(aux["sigma_mean"]), sigma.mean(), rtol=1e-5)


def test_bootstrap_masks_zero_the_masked_members_losses():
    config = dqn.DQNConfig(hidden_sizes=(16,), ensemble_size=3, prior_scale=1.0, bootstrap_probability=0.5)
    batch = make_batch(8)
    mask = np.ones((8, 3), np.float32)
    mask[:, 1] = 0.0  # member 1 trains on none of these transitions
    mask[:4, 2] = 0.0  # member 2 on half of them
    state = dqn.init(KEY, CARTPOLE, config)
    params, static = eqx.partition({"q": state.online}, eqx.is_inexact_array)

    def loss(p, b):
        return dqn._loss(eqx.combine(p, static), state.target, b, config)[0]

    grad = jax.jit(jax.grad(loss))
    grads = grad(params, {**batch, "extras": {"bootstrap_mask": mask}})["q"]
    assert np.all(_member_grads(grads, slice(1, 2)) == 0) and np.any(_member_grads(grads, slice(0, 1)) != 0)
    half = {k: v[4:] for k, v in batch.items()}
    grads_half = grad(params, half)["q"]  # member 2 on the unmasked half alone (mean over 4, not 8)
    np.testing.assert_allclose(_member_grads(grads, slice(2, 3)), 0.5 * _member_grads(grads_half, slice(2, 3)),
                               rtol=1e-4, atol=1e-7)
    assert dqn.spec_extras(CARTPOLE, config).extras["bootstrap_mask"].shape == (3,)
    assert "bootstrap_mask" not in dqn.spec_extras(CARTPOLE, dqn.DQNConfig()).extras


def test_update_reports_sigma_and_disagreement():
    state = tdu.init(KEY, CARTPOLE, CONFIG)
    batch = {**make_batch(), "extras": {"bootstrap_mask": np.ones((32, 6), np.float32)}}
    new_state, metrics = tdu.update(state, batch, CONFIG)
    assert int(new_state.steps) == 1 and metrics["priorities"].shape == (32,)
    for name in ("sigma_mean", "sigma_max", "bonus_mean", "disagreement", "explore_mean_q"):
        assert np.isfinite(float(metrics[name])), name
    assert float(metrics["sigma_max"]) >= float(metrics["sigma_mean"]) > 0.0
    np.testing.assert_allclose(float(metrics["bonus_mean"]), 0.5 * float(metrics["sigma_mean"]), rtol=1e-6)


def test_evaluation_and_acting_members():
    state = tdu.init(KEY, CARTPOLE, CONFIG)
    obs = make_batch(5)["observation"]
    members = np.asarray(dqn.member_q_values(state.online, obs))  # [6, 5, 2]
    np.testing.assert_allclose(np.asarray(tdu.exploit_q_values(CONFIG)(state.online, obs)), members[:4].mean(0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(tdu.explore_member_q_values(CONFIG)(state.online, obs)), members[4:],
                               rtol=1e-6)


@pytest.mark.parametrize("bad", [dict(exploration_members=0), dict(exploration_members=5), dict(ensemble_size=2),
                                 dict(tdu_beta=-1.0), dict(ensemble_acting="mean"), dict(bootstrap_probability=0.0)])
def test_bad_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        dataclasses.replace(CONFIG, **bad).validate()


def test_actors_follow_exploration_members_and_record_bootstrap_masks():
    from rillet.learners.agents import get_agent

    state, b = tdu.init(KEY, CARTPOLE, CONFIG), 64
    parts = get_agent("tdu").actor(CARTPOLE, CONFIG, b, {"epsilon": np.zeros(b, np.float32)})
    obs = np.random.default_rng(0).normal(size=(b, 4)).astype(np.float32)
    action, extras, actor_state = parts.policy(state.online, obs, parts.actor_state, jax.random.PRNGKey(1))
    member = np.asarray(actor_state["member"])
    assert set(member) <= {0, 1} and len(set(member)) == 2  # E = 2 exploration members, both drawn
    explore_q = np.asarray(tdu.explore_member_q_values(CONFIG)(state.online, obs))  # [2, B, A]
    np.testing.assert_array_equal(np.asarray(action), explore_q[member, np.arange(b)].argmax(-1))
    mask = np.asarray(extras["bootstrap_mask"])
    assert mask.shape == (b, 6) and set(np.unique(mask)) == {0.0, 1.0} and 0.35 < mask.mean() < 0.65
    evaluator = get_agent("tdu").evaluator(CARTPOLE, CONFIG, b)
    greedy_action = np.asarray(evaluator.policy(state.online, obs, None, jax.random.PRNGKey(2))[0])
    np.testing.assert_array_equal(greedy_action, np.asarray(tdu.exploit_q_values(CONFIG)(state.online, obs)).argmax(-1))
    boot = get_agent("bootdqn").default_config()
    assert boot.ensemble_size > 1 and boot.prior_scale > 0 and boot.bootstrap_masks
