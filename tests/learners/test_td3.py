"""TD3 and the continuous-action critic targets, on hand-made values against direct numpy computations:
the trace coefficients from hand-made densities, each estimator against its recursion, Peng at lambda
0 and 1, the twin-critic minimum with target policy smoothing, and the delayed actor and target updates."""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError
from rillet.learners import continuous_targets as ct
from rillet.learners import td3
from rillet.learners.networks import MLP
from rillet.learners.networks.ensemble import ensemble

LAM = 0.8
# One sequence of T = 5 transitions: a termination after t = 2 (discount 0), a padded last step.
R = np.array([1.0, -0.5, 2.0, 0.25, 3.0], np.float32)
D = np.array([0.9, 0.9, 0.0, 0.9, 0.9], np.float32)
VALID = np.array([True, True, True, True, False])
V = np.array([0.5, 1.5, -1.0, 2.0, 0.75, 9.0], np.float32)  # E_pi Q(x_t), t = 0..5
Q = np.array([0.25, 1.0, -2.0, 1.5, 0.5, 9.0], np.float32)  # Q(x_t, a_t)
C = np.array([0.3, 0.6, 0.2, 0.7, 0.4, 0.5], np.float32)  # c_t (c_0 unused)


def next_live(t):
    """Whether the trace may continue into transition t (t < T and valid)."""
    return t < len(R) and VALID[t]


def np_nstep(n):
    out = np.zeros(len(R))
    for t in np.flatnonzero(VALID):
        g, disc, k = 0.0, 1.0, 0
        while True:
            g, disc, k = g + disc * R[t + k], disc * D[t + k], k + 1
            if k == n or not next_live(t + k):
                out[t] = g + disc * V[t + k]
                break
    return out


def np_peng(lam, n):
    def g(t, depth):
        if depth == n or not next_live(t + 1):
            return R[t] + D[t] * V[t + 1]
        return R[t] + D[t] * ((1 - lam) * V[t + 1] + lam * g(t + 1, depth + 1))
    return np.array([g(t, 1) if VALID[t] else 0.0 for t in range(len(R))])


def np_general(c):
    out, g_next = np.zeros(len(R)), 0.0
    for t in reversed(range(len(R))):
        if not VALID[t]:
            continue
        ct_next = c[t + 1] if next_live(t + 1) else 0.0
        out[t] = g_next = R[t] + D[t] * (V[t + 1] - ct_next * Q[t + 1] + ct_next * g_next)
    return out


def targets(estimator, n=None, lam=LAM, c=C):
    return np.asarray(ct.continuous_targets(estimator, Q[None], V[None], R[None], D[None], VALID[None],
                                            jnp.asarray(c)[None], lambda_=lam, n=n))[0]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_nstep_against_numpy(n):
    np.testing.assert_allclose(targets("nstep", n), np_nstep(n), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n", [1, 3, None])
@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_peng_against_numpy(n, lam):
    np.testing.assert_allclose(targets("peng", n, lam), np_peng(lam, n or 99), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("estimator", ["retrace", "tree_backup"])
def test_trace_estimators_follow_the_general_recursion_with_the_given_c(estimator):
    np.testing.assert_allclose(targets(estimator), np_general(C), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(targets(estimator, c=np.zeros(6, np.float32)), np_nstep(1), rtol=1e-6, atol=1e-6)


def test_peng_lambda_zero_is_td3_one_step_and_lambda_one_is_monte_carlo_plus_bootstrap():
    one_step = [R[t] + D[t] * V[t + 1] if VALID[t] else 0.0 for t in range(5)]
    np.testing.assert_allclose(targets("peng", None, 0.0), one_step, rtol=1e-6)
    # lambda = 1: r_t + d_t r_{t+1} + ... to the episode end (t = 2, discount 0) or the valid part's end (t = 3)
    mc = [R[0] + 0.9 * R[1] + 0.81 * R[2], R[1] + 0.9 * R[2], R[2], R[3] + 0.9 * V[4], 0.0]
    np.testing.assert_allclose(targets("peng", None, 1.0), mc, rtol=1e-6)


def test_padding_garbage_never_leaks():
    c = C.copy()
    c[5] = np.inf  # trace coefficient of the padded step
    assert np.isfinite(targets("retrace", c=c)).all()
    np.testing.assert_allclose(targets("retrace", c=c), np_general(C), rtol=1e-6)


def np_log_normal(x, mean, std):
    x, mean = np.atleast_1d(x), np.atleast_1d(mean)
    return float(np.sum(-0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)))


def test_retrace_traces_on_hand_made_densities():
    # 1-D: target pi'(x) = 0.1, sigma_s = 0.2; behaviour N(0.25, 0.1^2); taken a = 0.3.
    log_mu = np_log_normal(0.3, 0.25, 0.1)
    rho = math.exp(np_log_normal(0.3, 0.1, 0.2) - log_mu)  # 0.5 * exp(-0.5 + 0.125) ~ 0.344
    c = ct.retrace_traces(jnp.array([[0.3]]), jnp.array([[0.1]]), jnp.array([log_mu]), 0.2, LAM)
    np.testing.assert_allclose(np.asarray(c), [LAM * min(1.0, rho)], rtol=1e-5)
    assert rho < 1
    # The behaviour mean on the target action: near it the wider smoothed target is the lower density
    # (rho = 0.5 exp(0.015) at 0.02 away); 3 sigma_b away it is the higher one (rho = 0.5 exp(3.375)) -> c = lambda.
    for a, rho in ((0.12, 0.5 * math.exp(0.0004 * (50 - 12.5))), (0.4, 0.5 * math.exp(0.09 * (50 - 12.5)))):
        log_mu = np_log_normal(a, 0.1, 0.1)
        c = ct.retrace_traces(jnp.array([[a]]), jnp.array([[0.1]]), jnp.array([log_mu]), 0.2, LAM)
        np.testing.assert_allclose(np.asarray(c), [LAM * min(1.0, rho)], rtol=1e-5)
    # 2-D, uniform warm-up behaviour (log mu = -2 log 2): rho = N(a; pi', 0.2^2 I) * 4.
    a, target = np.array([0.5, -0.2]), np.array([0.2, 0.1])
    rho = math.exp(np_log_normal(a, target, 0.2) + 2 * math.log(2))
    c = ct.retrace_traces(jnp.asarray(a)[None], jnp.asarray(target)[None], jnp.array([-2 * math.log(2)]), 0.2, LAM)
    np.testing.assert_allclose(np.asarray(c), [LAM * min(1.0, rho)], rtol=1e-5)


def test_tree_backup_traces_are_the_peak_normalised_smoothed_density():
    a, target = np.array([[0.5, -0.2], [0.1, 0.1]]), np.array([[0.2, 0.1], [0.1, 0.1]])
    expected = [LAM * math.exp(-(0.09 + 0.09) / (2 * 0.04)), LAM]  # 1 at the target action
    np.testing.assert_allclose(np.asarray(ct.tree_backup_traces(a, target, 0.2, LAM)), expected, rtol=1e-5)
    peak = math.exp(np_log_normal(target[0], target[0], 0.2))
    np.testing.assert_allclose(expected[0] / LAM, math.exp(np_log_normal(a[0], target[0], 0.2)) / peak, rtol=1e-6)


def test_trace_coefficients_dispatch_and_unknown_estimator():
    a = jnp.zeros((1, 3, 2))
    np.testing.assert_allclose(ct.trace_coefficients("peng", a, a, jnp.zeros((1, 3)), lambda_=LAM, smoothing_std=0.2),
                               np.full((1, 3), LAM))
    with pytest.raises(ConfigError, match="tree_backup"):
        ct.trace_coefficients("watkins", a, a, jnp.zeros((1, 3)), lambda_=LAM, smoothing_std=0.2)


# ------------------------------------------------------------------------------------------- TD3

SPEC = StepSpec(observation=ArraySpec((1,), "float32"), action=ArraySpec((1,), "float32")).with_extras(
    behaviour_log_prob=ArraySpec((), "float32"))
SMALL = td3.TD3Config(hidden_sizes=(8,), trace_length=2, n_step=1, learning_rate=1e-2, tau=0.1)


def linear_state(config, actor_bias=math.atanh(0.9), critic_w=(1.0, 2.0), critic_b=(0.0, -0.5)):
    """A TD3 state whose target actor outputs 0.9 everywhere and whose twin target critics are
    Q_k(x, a) = w_k a + b_k (single linear layers)."""
    state = td3.init(jax.random.PRNGKey(0), SPEC, config)
    actor = MLP(1, (), 1, jax.random.PRNGKey(1))
    actor = eqx.tree_at(lambda m: (m.layers[0].weight, m.layers[0].bias), actor,
                        (jnp.zeros((1, 1)), jnp.full((1,), actor_bias)))
    critic = ensemble(lambda k: MLP(2, (), 1, k), jax.random.PRNGKey(2), 2)
    weight = jnp.array([[[0.0, critic_w[0]]], [[0.0, critic_w[1]]]])
    critic = eqx.tree_at(lambda m: (m.networks.layers[0].weight, m.networks.layers[0].bias), critic,
                         (weight, jnp.array(critic_b)[:, None]))
    return eqx.tree_at(lambda s: (s.target_actor, s.target_critic), state, (actor, critic))


def sequence_batch(b=3, length=3, seed=0):
    rng = np.random.default_rng(seed)
    return {"observation": rng.normal(size=(b, length, 1)).astype(np.float32),
            "action": rng.uniform(-1, 1, (b, length, 1)).astype(np.float32),
            "reward": rng.normal(size=(b, length)).astype(np.float32),
            "discount": np.ones((b, length), np.float32), "is_first": np.zeros((b, length), bool),
            "is_last": np.zeros((b, length), bool), "is_terminal": np.zeros((b, length), bool),
            "mask": np.ones((b, length), bool),
            "extras": {"behaviour_log_prob": np.zeros((b, length), np.float32)}}


def test_one_step_target_is_reward_plus_min_twin_at_the_smoothed_clipped_target_action():
    config = dataclasses.replace(SMALL, policy_noise=1.0, noise_clip=0.5)
    state, batch, key = linear_state(config), sequence_batch(), jax.random.PRNGKey(7)
    g, valid, _ = td3.critic_targets(state, batch, key, config)
    eps = np.clip(np.asarray(jax.random.normal(key, (3, 3, 1))), -0.5, 0.5)
    smoothed = np.clip(0.9 + eps, -1.0, 1.0)[..., 0]  # [B, T+1]
    twin_min = np.minimum(1.0 * smoothed + 0.0, 2.0 * smoothed - 0.5)
    expected = batch["reward"][:, :2] + config.gamma * twin_min[:, 1:]
    assert np.asarray(valid).all()
    np.testing.assert_allclose(np.asarray(g), expected, rtol=1e-5)
    assert (smoothed <= 1.0).all() and (smoothed < 0.9 + 0.5 + 1e-6).all() and (smoothed >= 0.4 - 1e-6).all()


def test_smoothing_noise_is_clipped_and_zero_clip_gives_the_target_action():
    state = linear_state(SMALL)
    obs = jnp.zeros((200, 1))
    wide = dataclasses.replace(SMALL, policy_noise=10.0, noise_clip=0.3)
    mean, smoothed = td3.smoothed_target_action(state.target_actor, obs, jax.random.PRNGKey(3), wide)
    np.testing.assert_allclose(np.asarray(mean), 0.9, rtol=1e-6)
    smoothed = np.asarray(smoothed)  # 0.9 + noise clipped to +-0.3, then the action clipped to 1
    assert smoothed.min() >= 0.6 - 1e-6 and smoothed.max() <= 1.0
    assert np.isclose(smoothed, 0.6).sum() > 50 and np.isclose(smoothed, 1.0).sum() > 50
    _, exact = td3.smoothed_target_action(state.target_actor, obs, jax.random.PRNGKey(3),
                                          dataclasses.replace(SMALL, noise_clip=0.0))
    np.testing.assert_allclose(np.asarray(exact), 0.9, rtol=1e-6)


def test_twin_critic_minimum_takes_the_lower_critic_per_state():
    state = linear_state(SMALL, critic_w=(1.0, -1.0), critic_b=(0.0, 0.0))
    action = jnp.array([[-0.5], [0.5]])
    q = td3.critic_values(state.target_critic, jnp.zeros((2, 1)), action)
    np.testing.assert_allclose(np.asarray(q), [[-0.5, 0.5], [0.5, -0.5]])
    np.testing.assert_allclose(np.asarray(jnp.min(q, axis=0)), [-0.5, -0.5])


def leaves(module):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(module, eqx.is_inexact_array))]


def assert_same(a, b):
    for x, y in zip(leaves(a), leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_actor_and_targets_move_only_every_policy_delay_updates():
    config = dataclasses.replace(SMALL, policy_delay=3)
    state0, batch = td3.init(jax.random.PRNGKey(0), SPEC, config), sequence_batch()
    states = [state0]
    for _ in range(3):
        state, metrics = td3.update(states[-1], batch, config)
        states.append(state)
        assert float(metrics["actor_updated"]) == (len(states) - 1 == 3)
    for s in states[1:3]:  # updates 1 and 2: critic steps only
        assert_same(s.actor, state0.actor)
        assert_same(s.target_actor, state0.target_actor)
        assert_same(s.target_critic, state0.target_critic)
    assert any((x != y).any() for x, y in zip(leaves(states[1].critic), leaves(state0.critic)))
    s3 = states[3]  # update 3: the actor steps, then both targets move by Polyak averaging
    assert any((x != y).any() for x, y in zip(leaves(s3.actor), leaves(state0.actor)))
    tau = config.tau
    for target, before, online in ((s3.target_actor, state0.target_actor, s3.actor),
                                   (s3.target_critic, state0.target_critic, s3.critic)):
        for t, b, o in zip(leaves(target), leaves(before), leaves(online)):
            np.testing.assert_allclose(t, (1 - tau) * b + tau * o, rtol=1e-5, atol=1e-7)
    assert int(s3.steps) == 3


def test_actor_step_raises_the_first_critics_value():
    config = dataclasses.replace(SMALL, policy_delay=1, learning_rate=1e-2)
    state, batch = td3.init(jax.random.PRNGKey(1), SPEC, config), sequence_batch(b=16, seed=2)
    new, metrics = td3.update(state, batch, config)
    obs = batch["observation"][:, :2]
    before = td3.critic_values(new.critic, obs, td3.policy_action(state.actor, obs))[0].mean()
    after = td3.critic_values(new.critic, obs, td3.policy_action(new.actor, obs))[0].mean()
    assert float(after) > float(before)
    assert np.isfinite(float(metrics["actor_loss"])) and float(metrics["actor_updated"]) == 1.0


@pytest.mark.parametrize("estimator", ct.CONTINUOUS_ESTIMATORS)
def test_every_estimator_updates_with_finite_metrics(estimator):
    config = dataclasses.replace(SMALL, estimator=estimator, trace_length=4, n_step=3)
    state = td3.init(jax.random.PRNGKey(0), SPEC, config)
    batch = sequence_batch(b=4, length=5)
    batch["is_first"][0, 2] = True  # a new episode inside the first sequence
    batch["is_last"][1, 2], batch["mask"][1, 3:] = True, False  # an episode end, then padding
    state, metrics = td3.update(state, batch, config)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert float(metrics["valid_steps"]) == 16 - 1 - 2


def test_bad_configs_and_specs_raise_config_errors():
    with pytest.raises(ConfigError, match="estimator"):
        td3.TD3Config(estimator="watkins").validate()
    with pytest.raises(ConfigError, match="policy_delay"):
        td3.TD3Config(policy_delay=0).validate()
    with pytest.raises(ConfigError, match="tau"):
        td3.TD3Config(tau=0.0).validate()
    discrete = StepSpec(observation=ArraySpec((4,), "float32"), action=ArraySpec((), "int32"), num_actions=2)
    with pytest.raises(ConfigError, match="continuous"):
        td3.init(jax.random.PRNGKey(0), discrete, td3.TD3Config())
