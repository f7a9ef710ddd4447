"""DQN learner: loss decreases, exact TD targets, target-network updates, config checks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError, SpecMismatchError
from rillet.learners import dqn

CARTPOLE = StepSpec(ArraySpec((4,), "float32"), ArraySpec((), "int32"), num_actions=2, env_id="CartPole-v1")
ATARI = StepSpec(ArraySpec((4, 84, 84), "uint8"), ArraySpec((), "int32"), num_actions=6, env_id="Pong-v5")
SMALL = dqn.DQNConfig(hidden_sizes=(32, 32))


def make_batch(spec, batch_size=32, seed=0, weights=False):
    rng = np.random.default_rng(seed)
    obs_shape = (batch_size,) + spec.observation.shape
    if spec.observation.dtype == "uint8":
        obs, next_obs = (rng.integers(0, 256, obs_shape).astype(np.uint8) for _ in range(2))
    else:
        obs, next_obs = (rng.normal(size=obs_shape).astype(np.float32) for _ in range(2))
    discount = np.where(rng.random(batch_size) < 0.2, 0.0, 0.99**3).astype(np.float32)
    batch = {
        "observation": obs,
        "action": rng.integers(0, spec.num_actions, batch_size).astype(np.int32),
        "reward": rng.normal(size=batch_size).astype(np.float32),
        "discount": discount,
        "next_observation": next_obs,
    }
    if weights:
        batch["weights"] = rng.uniform(0.1, 1.0, batch_size).astype(np.float32)
    return batch


def arrays(tree):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def trees_equal(a, b):
    la, lb = arrays(a), arrays(b)
    return len(la) == len(lb) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(la, lb))


# --------------------------------------------------------------------------- config


def test_default_config_is_valid_and_hashable():
    cfg = dqn.DQNConfig()
    assert cfg.validate() is cfg
    assert hash(cfg) == hash(dqn.DQNConfig())
    assert dqn.DQNConfig(hidden_sizes=[64, 64]).hidden_sizes == (64, 64)


@pytest.mark.parametrize(
    "field, value",
    [
        ("learning_rate", 0.0),
        ("learning_rate", -1e-3),
        ("learning_rate", float("nan")),
        ("adam_eps", 0.0),
        ("max_grad_norm", -1.0),
        ("huber_delta", 0.0),
        ("target_update_period", 0),
        ("target_update_period", 2.5),
        ("target_polyak_tau", 0.0),
        ("target_polyak_tau", 1.5),
        ("hidden_sizes", (64, 0)),
        ("hidden_sizes", (64, -3)),
        ("double_q", "yes"),
    ],
)
def test_invalid_config_raises_config_error_naming_field(field, value):
    cfg = dqn.DQNConfig(**{field: value})
    with pytest.raises(ConfigError, match=field) as info:
        cfg.validate()
    assert repr(value) in str(info.value) or str(value) in str(info.value)
    with pytest.raises(ConfigError, match=field):
        dqn.init(jax.random.PRNGKey(0), CARTPOLE, cfg)


def test_polyak_tau_one_is_valid():
    dqn.DQNConfig(target_polyak_tau=1.0).validate()


# --------------------------------------------------------------------------- init / state


def test_init_state_is_checkpointable_pytree_of_arrays():
    state = dqn.init(jax.random.PRNGKey(0), CARTPOLE, SMALL)
    assert int(state.steps) == 0 and state.steps.dtype == jnp.int32
    assert trees_equal(state.online, state.target)
    ckpt, static = eqx.partition(state, eqx.is_array)
    leaves, treedef = jax.tree.flatten(ckpt)
    assert leaves and all(isinstance(x, jax.Array) for x in leaves)
    # Round trip through numpy (what a checkpointer does) and keep training identically.
    restored = eqx.combine(jax.tree.unflatten(treedef, [jnp.asarray(np.asarray(x)) for x in leaves]), static)
    batch = make_batch(CARTPOLE)
    s1, m1 = dqn.update(state, batch, SMALL)
    s2, m2 = dqn.update(restored, batch, SMALL)
    assert trees_equal(s1, s2) and float(m1["loss"]) == float(m2["loss"])


def test_init_accepts_typed_keys():
    state = dqn.init(jax.random.key(0), CARTPOLE, SMALL)
    assert state.key.dtype == jnp.uint32


# --------------------------------------------------------------------------- update


def test_update_lowers_loss_on_fixed_batch():
    cfg = dqn.DQNConfig()  # the CartPole defaults
    state = dqn.init(jax.random.PRNGKey(1), CARTPOLE, cfg)
    batch = make_batch(CARTPOLE, weights=True)
    _, first = dqn.update(state, batch, cfg)
    for _ in range(50):
        state, metrics = dqn.update(state, batch, cfg)
    assert int(state.steps) == 50
    _, last = dqn.update(state, batch, cfg)
    assert float(last["loss"]) < 0.2 * float(first["loss"]), (float(first["loss"]), float(last["loss"]))
    assert metrics["td_abs"].shape == (32,)
    for name in ("loss", "mean_q", "grad_norm"):
        assert metrics[name].shape == () and np.isfinite(float(metrics[name]))


def test_update_is_deterministic():
    state = dqn.init(jax.random.PRNGKey(2), CARTPOLE, SMALL)
    batch = make_batch(CARTPOLE, seed=3)
    s1, m1 = dqn.update(state, batch, SMALL)
    s2, m2 = dqn.update(state, batch, SMALL)
    assert trees_equal(s1, s2)
    for k in m1:
        assert np.array_equal(np.asarray(m1[k]), np.asarray(m2[k]))


def test_td_abs_matches_td_targets():
    cfg = dqn.DQNConfig(hidden_sizes=(16,))
    state = dqn.init(jax.random.PRNGKey(4), CARTPOLE, cfg)
    state, _ = dqn.update(state, make_batch(CARTPOLE, seed=9), cfg)  # make online != target
    batch = make_batch(CARTPOLE, seed=5)
    targets = dqn.td_targets(state, batch, cfg)
    q = dqn.q_values(state.online, batch["observation"])
    q_taken = np.take_along_axis(np.asarray(q), batch["action"][:, None], axis=1)[:, 0]
    _, metrics = dqn.update(state, batch, cfg)
    np.testing.assert_allclose(metrics["td_abs"], np.abs(np.asarray(targets) - q_taken), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["mean_q"], q_taken.mean(), rtol=1e-5, atol=1e-6)


def test_importance_weights():
    state = dqn.init(jax.random.PRNGKey(6), CARTPOLE, SMALL)
    batch = make_batch(CARTPOLE)
    _, plain = dqn.update(state, batch, SMALL)
    _, doubled = dqn.update(state, {**batch, "weights": np.full(32, 2.0, np.float32)}, SMALL)
    np.testing.assert_allclose(doubled["loss"], 2 * plain["loss"], rtol=1e-5)
    zeroed, m = dqn.update(state, {**batch, "weights": np.zeros(32, np.float32)}, SMALL)
    assert float(m["loss"]) == 0.0 and float(m["grad_norm"]) == 0.0
    assert trees_equal(zeroed.online, state.online)


def test_atari_update_runs():
    cfg = dqn.DQNConfig(learning_rate=1e-4, dueling=True)
    state = dqn.init(jax.random.PRNGKey(7), ATARI, cfg)
    batch = make_batch(ATARI, batch_size=2)
    dqn.check_batch_spec(ATARI, batch)
    state, metrics = dqn.update(state, batch, cfg)
    assert int(state.steps) == 1 and metrics["td_abs"].shape == (2,)
    assert dqn.q_values(state.online, batch["observation"]).shape == (2, 6)


# --------------------------------------------------------------------------- TD targets by hand

TINY = StepSpec(ArraySpec((3,), "float32"), ArraySpec((), "int32"), num_actions=3)


def set_linear(state, w_online, b_online, w_target, b_target):
    """With hidden_sizes=() the MLP is one linear layer: Q(s) = W s + b."""
    state = eqx.tree_at(lambda s: (s.online.layers[0].weight, s.online.layers[0].bias), state,
                        (jnp.asarray(w_online, jnp.float32), jnp.asarray(b_online, jnp.float32)))
    return eqx.tree_at(lambda s: (s.target.layers[0].weight, s.target.layers[0].bias), state,
                       (jnp.asarray(w_target, jnp.float32), jnp.asarray(b_target, jnp.float32)))


@pytest.mark.parametrize("double_q, expected", [(True, [1.45, -1.25, 2.0]), (False, [2.35, 1.25, 2.0])])
def test_td_targets_by_hand(double_q, expected):
    cfg = dqn.DQNConfig(hidden_sizes=(), double_q=double_q)
    state = dqn.init(jax.random.PRNGKey(0), TINY, cfg)
    # Online Q(s') = s'; target Q(s') = 2 * reversed(s') + [0.5, 0, -0.5].
    state = set_linear(state, np.eye(3), np.zeros(3), 2 * np.eye(3)[::-1], [0.5, 0.0, -0.5])
    batch = {
        "observation": np.zeros((3, 3), np.float32),
        "action": np.zeros(3, np.int32),
        "reward": np.array([1.0, -1.0, 2.0], np.float32),
        "discount": np.array([0.9, 0.5, 0.0], np.float32),  # last transition is terminal
        "next_observation": np.array([[1, 0, 0], [0, 0, 2], [0, 3, 0]], np.float32),
    }
    # Row 0: online argmax 0 -> target Q [0.5, 0, 1.5][0] = 0.5 (max would be 1.5).
    # Row 1: online argmax 2 -> target Q [4.5, 0, -0.5][2] = -0.5 (max would be 4.5).
    # Row 2: discount 0 -> target = reward.
    np.testing.assert_allclose(dqn.td_targets(state, batch, cfg), expected, rtol=1e-6)


def test_td_targets_match_numpy_double_q():
    cfg = dqn.DQNConfig(hidden_sizes=())
    rng = np.random.default_rng(11)
    wo, bo, wt, bt = rng.normal(size=(3, 3)), rng.normal(size=3), rng.normal(size=(3, 3)), rng.normal(size=3)
    state = set_linear(dqn.init(jax.random.PRNGKey(0), TINY, cfg), wo, bo, wt, bt)
    batch = make_batch(TINY, batch_size=16, seed=12)
    x = batch["next_observation"].astype(np.float64)
    q_online, q_target = x @ wo.T + bo, x @ wt.T + bt
    a_star = q_online.argmax(axis=1)
    want = batch["reward"] + batch["discount"] * q_target[np.arange(16), a_star]
    np.testing.assert_allclose(dqn.td_targets(state, batch, cfg), want, rtol=1e-5, atol=1e-5)
    terminal = batch["discount"] == 0
    assert terminal.any()
    np.testing.assert_allclose(np.asarray(dqn.td_targets(state, batch, cfg))[terminal], batch["reward"][terminal])


# --------------------------------------------------------------------------- target network


def test_periodic_target_copy_exactly_at_period():
    cfg = dqn.DQNConfig(hidden_sizes=(8,), learning_rate=1e-2, target_update_period=3)
    state = dqn.init(jax.random.PRNGKey(3), CARTPOLE, cfg)
    initial = state.online
    batch = make_batch(CARTPOLE)
    for step in (1, 2):
        state, _ = dqn.update(state, batch, cfg)
        assert trees_equal(state.target, initial), f"target changed early at step {step}"
        assert not trees_equal(state.online, initial)
    state, _ = dqn.update(state, batch, cfg)
    assert int(state.steps) == 3 and trees_equal(state.target, state.online)
    copied = state.online
    state, _ = dqn.update(state, batch, cfg)
    assert trees_equal(state.target, copied) and not trees_equal(state.target, state.online)
    for _ in range(2):
        state, _ = dqn.update(state, batch, cfg)
    assert int(state.steps) == 6 and trees_equal(state.target, state.online)


def test_polyak_target_update_mixes_with_tau():
    tau = 0.25
    cfg = dqn.DQNConfig(hidden_sizes=(8,), learning_rate=1e-2, target_polyak_tau=tau, target_update_period=1)
    state = dqn.init(jax.random.PRNGKey(5), CARTPOLE, cfg)
    old_target = arrays(state.target)
    state, _ = dqn.update(state, make_batch(CARTPOLE), cfg)
    for new_t, old_t, online in zip(arrays(state.target), old_target, arrays(state.online)):
        np.testing.assert_allclose(new_t, tau * online + (1 - tau) * old_t, rtol=1e-5, atol=1e-7)
    assert not trees_equal(state.target, state.online)


# --------------------------------------------------------------------------- batch checks


def test_check_batch_spec_accepts_valid_batches():
    dqn.check_batch_spec(CARTPOLE, make_batch(CARTPOLE))
    dqn.check_batch_spec(CARTPOLE, make_batch(CARTPOLE, weights=True))


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda b: b.update(observation=np.zeros((32, 5), np.float32)), "observation"),
        (lambda b: b.update(next_observation=np.zeros((32, 4), np.float64)), "next_observation"),
        (lambda b: b.pop("next_observation"), "missing"),
        (lambda b: b.update(action=b["action"].astype(np.int64)), "action"),
        (lambda b: b.update(reward=np.zeros((32, 1), np.float32)), "reward"),
        (lambda b: b.update(discount=np.zeros(31, np.float32)), "leading batch axis"),
        (lambda b: b.update(action=np.full(32, 2, np.int32)), "outside"),
        (lambda b: b.update(weights=np.ones(32, np.float64)), "weights"),
    ],
)
def test_check_batch_spec_rejects_bad_batches(change, match):
    batch = make_batch(CARTPOLE)
    change(batch)
    with pytest.raises(SpecMismatchError, match=match):
        dqn.check_batch_spec(CARTPOLE, batch)


def test_learning_rate_is_held_then_decayed_linearly():
    cfg = dqn.DQNConfig(learning_rate=1e-3, learning_rate_end=1e-4, learning_rate_decay_start=10,
                    learning_rate_decay_updates=20).validate()
    schedule = cfg.learning_rate_schedule()
    np.testing.assert_allclose([float(schedule(n)) for n in (0, 10, 20, 30, 1000)],
                               [1e-3, 1e-3, 5.5e-4, 1e-4, 1e-4], rtol=1e-6)
    assert dqn.DQNConfig().learning_rate_schedule() == 1e-3
    with pytest.raises(ConfigError, match="learning_rate_decay_updates"):
        dqn.DQNConfig(learning_rate_end=1e-4).validate()
    with pytest.raises(ConfigError, match="learning_rate_end"):
        dqn.DQNConfig(learning_rate_end=-1.0, learning_rate_decay_updates=5).validate()
