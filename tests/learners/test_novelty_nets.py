"""NGU's learned novelty networks: RND (lifelong novelty, running statistics, multiplier) and the
inverse-dynamics embedding f(x)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError
from rillet.learners import optim
from rillet.learners.inverse_dynamics import InverseDynamics, action_logits, embed, inverse_dynamics_loss
from rillet.learners.rnd import (RND, RunningStats, freeze_target, init_stats, lifelong_multiplier, rnd_error,
                                 rnd_loss, trainable, update_stats)

VECTOR = StepSpec(ArraySpec((6,), "float32"), ArraySpec((), "int32"), num_actions=4, env_id="vector")
IMAGE = StepSpec(ArraySpec((4, 36, 36), "uint8"), ArraySpec((), "int32"), num_actions=5, env_id="image")
KEY = jax.random.PRNGKey(0)


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(eqx.filter(a, eqx.is_array)), jax.tree.leaves(eqx.filter(b, eqx.is_array))
    return len(la) == len(lb) and all(np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(la, lb))


def _stats(count, mean, var) -> RunningStats:
    return RunningStats(*(jnp.asarray(v, jnp.float32) for v in (count, mean, var)))


# --- running statistics and the lifelong multiplier --------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_update_stats_over_uneven_batches_equals_numpy_over_valid_values(seed):
    rng = np.random.default_rng(seed)
    stats, kept = init_stats(), []
    for size in (1, 7, 3, 20, 2):
        values = rng.normal(3.0, 2.0, size).astype(np.float32)
        valid = rng.random(size) < 0.7
        values[~valid] = 1e6  # invalid rows hold garbage that must not leak into the statistics
        stats = update_stats(stats, values, valid)
        kept.append(values[valid])
    kept = np.concatenate(kept)
    assert float(stats.count) == kept.size
    np.testing.assert_allclose(float(stats.mean), kept.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(stats.var), kept.var(), rtol=1e-5)


@pytest.mark.parametrize("start", [init_stats(), _stats(5.0, 1.5, 0.25)])
def test_update_stats_with_no_valid_row_leaves_stats_unchanged(start):
    after = update_stats(start, jnp.array([7.0, -3.0, 1e9]), jnp.zeros(3, bool))
    assert _leaves_equal(after, start)


def test_update_stats_single_values_give_zero_variance_then_the_pair_variance():
    stats = update_stats(init_stats(), jnp.array([4.0]), jnp.array([True]))
    assert (float(stats.count), float(stats.mean), float(stats.var)) == (1.0, 4.0, 0.0)
    stats = update_stats(stats, jnp.array([8.0, 0.0]), jnp.array([True, False]))
    assert (float(stats.count), float(stats.mean), float(stats.var)) == (2.0, 6.0, 4.0)


def test_lifelong_multiplier_hand_computed_and_clipped_to_one_and_L():
    stats = _stats(10.0, 2.0, 4.0)  # sigma = 2
    error = jnp.array([2.0, 4.0, 6.0, 5.0, 1e6, -1e6, 0.0])
    # alpha = 1 + (err - 2) / 2 -> 1, 2, 3, 2.5, huge, very negative, 0
    got = lifelong_multiplier(error, stats, max_multiplier=5.0)
    np.testing.assert_allclose(got[:4], [1.0, 2.0, 3.0, 2.5], rtol=1e-6)
    assert float(got[4]) == 5.0 and float(got[5]) == 1.0 and float(got[6]) == 1.0
    assert float(lifelong_multiplier(jnp.array([1e6]), stats, max_multiplier=2.5)[0]) == 2.5


def test_lifelong_multiplier_is_one_before_any_statistics_and_checks_L():
    np.testing.assert_array_equal(lifelong_multiplier(jnp.array([0.0, 1e6, -5.0]), init_stats()), np.ones(3))
    with pytest.raises(ConfigError, match="max_multiplier"):
        lifelong_multiplier(jnp.zeros(2), _stats(1.0, 0.0, 1.0), max_multiplier=0.5)


# --- RND -----------------------------------------------------------------------------------


def _rnd_batch(n=32):
    obs = jax.random.normal(jax.random.PRNGKey(1), (n, 6))
    return obs, jnp.arange(n) % 5 != 0


def test_rnd_error_shape_and_definition():
    rnd = RND(VECTOR, KEY, output_size=16, hidden_sizes=(32,))
    obs, _ = _rnd_batch(8)
    err = rnd_error(rnd, obs)
    assert err.shape == (8,) and err.dtype == jnp.float32
    expected = np.sum((np.asarray(rnd.predictor(obs)) - np.asarray(rnd.target(obs))) ** 2, axis=-1)
    np.testing.assert_allclose(err, expected, rtol=1e-5)
    assert rnd.target.head.linear.out_features == 16


def test_rnd_gradient_of_loss_wrt_target_is_zero_and_nonzero_for_predictor():
    rnd = RND(VECTOR, KEY, output_size=16, hidden_sizes=(32,))
    obs, valid = _rnd_batch()
    grads = eqx.filter_grad(lambda m: rnd_loss({"rnd": m}, obs, valid)[0])(rnd)
    target_grads = jax.tree.leaves(grads.target)
    assert target_grads and all(not np.any(np.asarray(g)) for g in target_grads)
    assert any(np.any(np.asarray(g)) for g in jax.tree.leaves(grads.predictor))


def test_rnd_loss_ignores_invalid_rows():
    rnd = RND(VECTOR, KEY, output_size=16, hidden_sizes=(32,))
    obs, valid = _rnd_batch()
    loss, aux = rnd_loss({"rnd": rnd}, obs, valid)
    np.testing.assert_allclose(loss, np.mean(np.asarray(aux["error"])[np.asarray(valid)]), rtol=1e-6)
    changed = obs.at[0].set(100.0)  # row 0 is invalid
    assert float(rnd_loss({"rnd": rnd}, changed, valid)[0]) == float(loss)


def test_rnd_training_through_group_step_lowers_error_and_leaves_target_bit_identical():
    rnd = RND(VECTOR, KEY, output_size=16, hidden_sizes=(32,))
    obs, valid = _rnd_batch()
    groups = {"rnd": freeze_target(optim.adam(1e-3))}
    modules = {"rnd": rnd}
    states = optim.init_groups(groups, modules)
    assert len(jax.tree.leaves(states)) == 2 * len(jax.tree.leaves(rnd.predictor)) + 1  # no target state
    step = eqx.filter_jit(lambda m, s: optim.group_step(rnd_loss, groups, m, s, obs, valid))
    first = float(rnd_loss(modules, obs, valid)[0])
    for _ in range(30):
        modules, states, _, _ = step(modules, states)
    last = float(rnd_loss(modules, obs, valid)[0])
    assert last < 0.5 * first
    assert _leaves_equal(modules["rnd"].target, rnd.target)
    assert not _leaves_equal(modules["rnd"].predictor, rnd.predictor)


def test_freeze_target_keeps_target_even_under_weight_decay():
    rnd = RND(VECTOR, KEY, output_size=8, hidden_sizes=(16,))
    obs, valid = _rnd_batch()
    groups = {"rnd": freeze_target(optax.adamw(1e-2, weight_decay=1.0))}
    modules = {"rnd": rnd}
    states = optim.init_groups(groups, modules)
    modules, _, _, _ = optim.group_step(rnd_loss, groups, modules, states, obs, valid)
    assert _leaves_equal(modules["rnd"].target, rnd.target)


def test_rnd_training_by_trainable_filter_leaves_target_bit_identical():
    rnd = RND(VECTOR, KEY, output_size=16, hidden_sizes=(32,))
    obs, valid = _rnd_batch()
    params, static = eqx.partition(rnd, trainable(rnd))
    assert jax.tree.leaves(params.target) == []
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)

    @eqx.filter_jit
    def step(params, opt_state):
        loss_of = lambda p: rnd_loss({"rnd": eqx.combine(p, static)}, obs, valid)[0]
        grads = eqx.filter_grad(loss_of)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return eqx.apply_updates(params, updates), opt_state

    first = float(rnd_loss({"rnd": rnd}, obs, valid)[0])
    for _ in range(10):
        params, opt_state = step(params, opt_state)
    trained = eqx.combine(params, static)
    assert float(rnd_loss({"rnd": trained}, obs, valid)[0]) < first
    assert _leaves_equal(trained.target, rnd.target)


# --- inverse dynamics ------------------------------------------------------------------------


def _dynamics_batch(n=64, num_actions=4):
    """x_{t+1} = x_t + 0.5 e_{a_t} on the first num_actions coordinates: a_t is a function of both."""
    obs = jax.random.normal(jax.random.PRNGKey(2), (n, 6))
    action = jax.random.randint(jax.random.PRNGKey(3), (n,), 0, num_actions)
    step = 0.5 * jax.nn.one_hot(action, 6)
    return obs, obs + step, action, jnp.arange(n) % 7 != 0


def test_inverse_dynamics_shapes_and_sizes():
    model = InverseDynamics(VECTOR, KEY)
    obs, next_obs, _, _ = _dynamics_batch(8)
    assert embed(model, obs).shape == (8, 32)
    assert action_logits(model, obs, next_obs).shape == (8, 4)
    assert model.classifier.in_size == 64 and model.classifier.out_size == 4
    assert [layer.out_features for layer in model.classifier.layers] == [128, 4]


def test_inverse_dynamics_learns_the_action_from_consecutive_observations():
    model = InverseDynamics(VECTOR, KEY, hidden_sizes=(64,), classifier_hidden=64)
    obs, next_obs, action, valid = _dynamics_batch()
    groups = {"embedding": optim.adam(3e-3)}
    modules = {"embedding": model}
    states = optim.init_groups(groups, modules)
    step = eqx.filter_jit(lambda m, s: optim.group_step(
        inverse_dynamics_loss, groups, m, s, obs, next_obs, action, valid))
    first = float(inverse_dynamics_loss(modules, obs, next_obs, action, valid)[0])
    for _ in range(200):
        modules, states, _, _ = step(modules, states)
    last, aux = inverse_dynamics_loss(modules, obs, next_obs, action, valid)
    assert float(last) < 0.5 * first
    assert float(aux["accuracy"]) > 0.9


def test_inverse_dynamics_loss_ignores_invalid_rows():
    model = InverseDynamics(VECTOR, KEY)
    obs, next_obs, action, valid = _dynamics_batch()
    loss, aux = inverse_dynamics_loss({"embedding": model}, obs, next_obs, action, valid)
    assert not bool(valid[0])
    for bad in (action.at[0].set((action[0] + 1) % 4), action.at[0].set(-1), action.at[0].set(99)):
        other, other_aux = inverse_dynamics_loss({"embedding": model}, obs, next_obs, bad, valid)
        assert float(other) == float(loss) and float(other_aux["accuracy"]) == float(aux["accuracy"])
    changed = inverse_dynamics_loss({"embedding": model}, obs, next_obs, action.at[1].set((action[1] + 1) % 4), valid)
    assert float(changed[0]) != float(loss)  # row 1 is valid: the check above can fail
    none, none_aux = inverse_dynamics_loss({"embedding": model}, obs, next_obs, action, jnp.zeros_like(valid))
    assert float(none) == 0.0 and float(none_aux["accuracy"]) == 0.0


def test_inverse_dynamics_needs_discrete_actions():
    continuous = StepSpec(ArraySpec((6,), "float32"), ArraySpec((2,), "float32"), num_actions=None)
    with pytest.raises(ConfigError, match="discrete"):
        InverseDynamics(continuous, KEY)


# --- image observations and jit --------------------------------------------------------------


def test_image_spec_builds_both_nets_with_the_conv_torso():
    obs = jax.random.randint(KEY, (3, 4, 36, 36), 0, 256).astype(jnp.uint8)
    rnd, model = RND(IMAGE, KEY), InverseDynamics(IMAGE, KEY)
    assert type(rnd.predictor.torso).__name__ == "NatureDQN" and type(model.embed.torso).__name__ == "NatureDQN"
    err = rnd_error(rnd, obs)
    assert err.shape == (3,) and err.dtype == jnp.float32 and np.all(np.isfinite(err))
    assert embed(model, obs).shape == (3, 32)
    loss, _ = inverse_dynamics_loss({"embedding": model}, obs, obs[::-1], jnp.array([0, 4, 2]), jnp.ones(3, bool))
    assert np.isfinite(float(loss))


def test_image_spec_too_small_for_the_conv_torso_is_refused():
    tiny = StepSpec(ArraySpec((4, 20, 20), "uint8"), ArraySpec((), "int32"), num_actions=3)
    with pytest.raises(ConfigError):
        RND(tiny, KEY)


def test_both_modules_and_the_statistics_pass_through_jit():
    rnd, model = RND(VECTOR, KEY, output_size=16, hidden_sizes=(32,)), InverseDynamics(VECTOR, KEY)
    obs, next_obs, action, valid = _dynamics_batch(16)
    np.testing.assert_allclose(eqx.filter_jit(rnd_error)(rnd, obs), rnd_error(rnd, obs), rtol=1e-5)
    np.testing.assert_allclose(jax.jit(rnd_loss)({"rnd": rnd}, obs, valid)[0],
                               rnd_loss({"rnd": rnd}, obs, valid)[0], rtol=1e-5)
    np.testing.assert_allclose(eqx.filter_jit(embed)(model, obs), embed(model, obs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(inverse_dynamics_loss)({"embedding": model}, obs, next_obs, action, valid)[0],
                               inverse_dynamics_loss({"embedding": model}, obs, next_obs, action, valid)[0], rtol=1e-5)
    err = rnd_error(rnd, obs)
    stats = jax.jit(update_stats)(init_stats(), err, valid)
    np.testing.assert_allclose(float(stats.mean), np.mean(np.asarray(err)[np.asarray(valid)]), rtol=1e-5)
    multiplier = jax.jit(lifelong_multiplier)(err, stats)
    assert multiplier.shape == (16,) and np.all((multiplier >= 1.0) & (multiplier <= 5.0))


def test_observation_statistics_per_entry_and_whitening():
    """Per-entry statistics of vector observations equal numpy's over valid rows; whitening clips to
    [-5, 5]; empty statistics and uint8 images pass through unchanged."""
    from rillet.learners.rnd import normalise_observation

    rng = np.random.default_rng(0)
    rows = rng.normal(3.0, 2.0, size=(40, 5)).astype(np.float32)
    valid = rng.uniform(size=40) < 0.7
    stats = init_stats((5,))
    assert normalise_observation(jnp.asarray(rows[:2]), stats).tolist() == rows[:2].tolist()
    for part in np.array_split(np.arange(40), 3):
        stats = update_stats(stats, jnp.asarray(rows[part]), jnp.asarray(valid[part]))
    np.testing.assert_allclose(stats.mean, rows[valid].mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.var, rows[valid].var(0), rtol=1e-4)
    far = np.full((1, 5), 1e3, np.float32)
    white = normalise_observation(jnp.asarray(np.concatenate([rows[:1], far])), stats)
    np.testing.assert_allclose(white[0], (rows[0] - rows[valid].mean(0)) / rows[valid].std(0), rtol=1e-3)
    assert np.all(np.asarray(white[1]) == 5.0)
    image = jnp.full((2, 4, 36, 36), 200, jnp.uint8)
    assert np.array_equal(np.asarray(normalise_observation(image, stats)), np.asarray(image))
