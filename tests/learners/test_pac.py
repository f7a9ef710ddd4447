"""PAC learner: hand-checked loss terms, learning on a fixed batch, NaN skipping, multi-task padding,
bf16 compute with fp32 master weights, sharded == unsharded update, config validation."""

import dataclasses
import math
import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError, SpecMismatchError
from rillet.learners import pac

SPECS = [
    StepSpec(ArraySpec((5,), "float32"), ArraySpec((3,), "float32"), env_id="walker"),
    StepSpec(ArraySpec((3,), "float32"), ArraySpec((2,), "float32"), env_id="reacher"),
]
CONFIG = pac.PACConfig(network="test", num_bins=5, num_atoms=11, v_min=-10.0, v_max=10.0,
                       num_action_samples=4, learning_rate=1e-3, adam_eps=1e-3)


def make_batch(batch_size=16, seed=0):
    rng = np.random.default_rng(seed)
    task = np.array([0, 1] * (batch_size // 2), np.int32)
    return {
        "observation": rng.normal(size=(batch_size, 5)).astype(np.float32),
        "next_observation": rng.normal(size=(batch_size, 5)).astype(np.float32),
        "task_id": task,
        "action": rng.uniform(-1, 1, (batch_size, 3)).astype(np.float32),
        "reward": rng.normal(size=batch_size).astype(np.float32),
        "discount": np.where(rng.random(batch_size) < 0.2, 0.0, 0.99).astype(np.float32),
    }


def arrays(tree):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


@pytest.fixture(scope="module")
def state():
    return pac.init(jax.random.PRNGKey(0), SPECS, CONFIG)


def test_improvement_weights_by_hand():
    q = jnp.array([0.0, 1.0, 2.0])
    e = np.exp([0.0, 1.0, 2.0])
    np.testing.assert_allclose(pac.improvement_weights(q, 1.0), e / e.sum(), rtol=1e-6)
    e2 = np.exp([0.0, 0.5, 1.0])
    np.testing.assert_allclose(pac.improvement_weights(q, 2.0), e2 / e2.sum(), rtol=1e-6)
    big = pac.improvement_weights(jnp.array([[1000.0, 1001.0], [3.0, 3.0]]), 1.0)  # stable, batched
    np.testing.assert_allclose(big, [[1 / (1 + math.e), math.e / (1 + math.e)], [0.5, 0.5]], rtol=1e-6)


def test_temperature_dual_by_hand_and_its_minimum_meets_the_kl_bound():
    q = jnp.array([[0.0, 2.0], [1.0, 1.0]])
    # eta = 1, epsilon = 0.1: 0.1 + mean(log((1 + e^2) / 2), log(e^1)).
    expected = 0.1 + 0.5 * (math.log((1 + math.e ** 2) / 2) + 1.0)
    np.testing.assert_allclose(pac.temperature_dual(jnp.float32(0.0), q, 0.1), expected, rtol=1e-6)
    # Minimising the dual over log eta gives weights whose KL to uniform is epsilon (one state).
    q1 = jnp.array([[0.0, 1.0, 3.0, -2.0]])
    grid = jnp.linspace(-4.0, 4.0, 4001)
    best = grid[jnp.argmin(jax.vmap(lambda t: pac.temperature_dual(t, q1, 0.2))(grid))]
    w = np.asarray(pac.improvement_weights(q1[0], jnp.exp(best)))
    np.testing.assert_allclose(np.sum(w * np.log(w * 4)), 0.2, atol=2e-3)


def test_temperature_dual_is_one_dual_per_task():
    """Two tasks whose Q spreads differ 100-fold: the summed dual is each task's own dual on its rows,
    and its minimum gives each task its own eta with KL = epsilon (one shared eta could not)."""
    rng = np.random.default_rng(0)
    q = jnp.asarray(np.concatenate([rng.normal(0, 10.0, (6, 8)), rng.normal(0, 0.1, (4, 8))]), jnp.float32)
    task = jnp.array([0] * 6 + [1] * 4)
    log_eta = jnp.array([0.5, -1.0])
    per_task = pac.temperature_dual(log_eta[0], q[:6], 0.1) + pac.temperature_dual(log_eta[1], q[6:], 0.1)
    np.testing.assert_allclose(pac.temperature_dual(log_eta, q, 0.1, task), per_task, rtol=1e-6)
    grid = jnp.linspace(-8.0, 6.0, 2801)
    best = [grid[jnp.argmin(jax.vmap(lambda t: pac.temperature_dual(t, q[rows], 0.1))(grid))]
            for rows in (slice(0, 6), slice(6, 10))]
    assert float(best[0]) - float(best[1]) > math.log(20)  # etas about 100x apart
    for rows, b in zip((slice(0, 6), slice(6, 10)), best):
        w = np.asarray(pac.improvement_weights(q[rows], jnp.exp(b)))
        np.testing.assert_allclose(np.mean(np.sum(w * np.log(w * 8), -1)), 0.1, atol=5e-3)
    # a task absent from the batch gets no gradient
    g = jax.grad(pac.temperature_dual)(jnp.zeros(3), q, 0.1, task)
    assert g[2] == 0.0 and g[0] != 0.0 and g[1] != 0.0


def test_learned_temperature_tracks_the_q_scale(state):
    """With Q spreads far below eta = 1 the dual shrinks each task's eta (weights would otherwise stay
    uniform); with learn_temperature=False eta stays fixed."""
    batch = make_batch()
    s, fixed = state, dataclasses.replace(CONFIG, learn_temperature=False)
    assert state.log_temperature.shape == (len(SPECS),)
    for _ in range(30):
        s, metrics = pac.update(s, batch, CONFIG)
    assert float(metrics["temperature"]) < 0.8 and np.all(np.asarray(s.log_temperature) < math.log(0.8))
    s2, metrics2 = pac.update(state, batch, fixed)
    assert float(metrics2["temperature"]) == 1.0
    np.testing.assert_array_equal(s2.log_temperature, state.log_temperature)


def test_learning_rate_schedule_constant_or_cosine_to_a_tenth():
    assert pac.learning_rate_schedule(CONFIG) == CONFIG.learning_rate
    schedule = pac.learning_rate_schedule(dataclasses.replace(CONFIG, learning_rate_decay_steps=100))
    np.testing.assert_allclose([schedule(0), schedule(50), schedule(100), schedule(500)],
                               [1e-3, 0.55e-3, 1e-4, 1e-4], rtol=1e-5)


def test_categorical_projection_by_hand():
    support = jnp.array([0.0, 1.0, 2.0])
    probs = jnp.array([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0], [0.5, 0, 0.5], [0.2, 0.3, 0.5]])
    rewards = jnp.array([0.5, 1.0, 1.0, 0.0, -5.0])
    discounts = jnp.array([0.0, 1.0, 1.0, 0.5, 0.9])
    expected = [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0], [1, 0, 0]]
    np.testing.assert_allclose(pac.categorical_projection(probs, rewards, discounts, support), expected, atol=1e-6)


def test_alpha_one_is_behaviour_cloning_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4)).astype(np.float32)
    mask = np.array([[True, True, False], [True, False, False]])
    data_bins = np.array([[0, 3, 2], [1, 1, 1]])
    samples = rng.integers(0, 4, (2, 5, 3))
    weights = rng.dirichlet(np.ones(5), 2).astype(np.float32)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.mean([logp[0, 0, 0] + logp[0, 1, 3], logp[1, 0, 1]])
    loss, aux = pac.policy_loss(logits, mask, data_bins, samples, weights, alpha=1.0)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(aux["bc_loss"], expected, rtol=1e-6)
    # alpha = 0 with one-hot weights: cross-entropy on the chosen samples.
    one_hot = np.eye(5, dtype=np.float32)[[2, 4]]
    loss0, _ = pac.policy_loss(logits, mask, data_bins, samples, one_hot, alpha=0.0)
    chosen = -np.mean([logp[0, 0, samples[0, 2, 0]] + logp[0, 1, samples[0, 2, 1]], logp[1, 0, samples[1, 4, 0]]])
    np.testing.assert_allclose(loss0, chosen, rtol=1e-6)


def test_critic_loss_and_action_bins_by_hand():
    t = jnp.array([[0.0, 1.0, 0.0], [0.25, 0.25, 0.5]])
    np.testing.assert_allclose(pac.critic_loss(jnp.zeros((2, 3)), t[:1]), math.log(3), rtol=1e-6)
    np.testing.assert_allclose(pac.critic_loss(jnp.log(t[1:]), t[1:]), 0.0, atol=1e-6)
    np.testing.assert_array_equal(pac.actions_to_bins(jnp.array([-1.0, -0.6, 0.0, 0.74, 2.0]), 5), [0, 1, 2, 3, 4])
    np.testing.assert_allclose(pac.bins_to_actions(jnp.arange(5), 5), [-1, -0.5, 0, 0.5, 1])


def test_update_lowers_the_loss_on_a_fixed_batch(state):
    batch = make_batch()
    losses = []
    s = state
    for _ in range(40):
        s, metrics = pac.update(s, batch, CONFIG)
        losses.append(float(metrics["loss"]))
    assert int(s.steps) == 40 and int(s.skipped) == 0
    assert all(np.isfinite(losses)) and np.mean(losses[-5:]) < 0.85 * losses[0], losses
    for k in ("bc_loss", "improvement_loss", "policy_loss", "critic_loss", "grad_norm", "skipped_nonfinite",
              "temperature"):
        assert k in metrics
    # The target network moved towards the online one (Polyak) but is not equal to it.
    diffs = [np.abs(a - b).max() for a, b in zip(arrays(s.online), arrays(s.target))]
    assert max(diffs) > 0


def test_nonfinite_batch_is_counted_and_skipped(state):
    batch = make_batch()
    clean, clean_metrics = pac.update(state, batch, CONFIG)
    for field, index in (("observation", (0, 1)), ("reward", (3,)), ("action", (2, 0))):
        bad = {k: v.copy() for k, v in batch.items()}
        bad[field][index] = np.nan
        new, metrics = pac.update(state, bad, CONFIG)
        assert int(metrics["skipped_nonfinite"]) == 1 and int(new.skipped) == 1 and int(new.steps) == 0
        for a, b in zip(arrays(eqx.tree_at(lambda s: s.skipped, new, state.skipped)), arrays(state)):
            np.testing.assert_array_equal(a, b)
    # NaN in a padded dim (task 1 has 3 obs dims and 2 action dims) is ignored, not skipped.
    padded = {k: v.copy() for k, v in batch.items()}
    padded["observation"][1, 4] = np.nan
    padded["action"][1, 2] = np.inf
    new, metrics = pac.update(state, padded, CONFIG)
    assert int(metrics["skipped_nonfinite"]) == 0 and int(new.steps) == 1
    np.testing.assert_allclose(metrics["loss"], clean_metrics["loss"], rtol=1e-6)


def test_padded_dims_do_not_change_the_update(state):
    batch = make_batch()
    rng = np.random.default_rng(7)
    changed = {k: v.copy() for k, v in batch.items()}
    task1 = batch["task_id"] == 1
    changed["observation"][task1, 3:] = rng.normal(size=(task1.sum(), 2)) * 50
    changed["next_observation"][task1, 3:] = rng.normal(size=(task1.sum(), 2)) * 50
    changed["action"][task1, 2] = rng.uniform(-1, 1, task1.sum())
    a, ma = pac.update(state, batch, CONFIG)
    b, mb = pac.update(state, changed, CONFIG)
    for k in ma:
        np.testing.assert_allclose(ma[k], mb[k], rtol=1e-6, atol=1e-7, err_msg=k)
    for x, y in zip(arrays(a), arrays(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    # Changing a real dim does change the loss.
    real = {k: v.copy() for k, v in batch.items()}
    real["observation"][task1, 0] += 1.0
    assert float(pac.update(state, real, CONFIG)[1]["loss"]) != float(ma["loss"])


def test_bfloat16_compute_keeps_float32_master_weights_and_hard_target_copies(state):
    # One compile covers both options: bf16 compute and periodic hard target copies (every update).
    cfg16 = dataclasses.replace(CONFIG, compute_dtype="bfloat16", target_polyak_tau=None, target_update_period=1)
    batch = make_batch()
    new, metrics = pac.update(state, batch, cfg16)
    _, metrics32 = pac.update(state, batch, CONFIG)
    assert int(new.steps) == 1 and np.isfinite(float(metrics["loss"]))
    np.testing.assert_allclose(metrics["loss"], metrics32["loss"], rtol=0.03)
    floats = [x for x in jax.tree.leaves(eqx.filter((new.online, new.target, new.opt_state), eqx.is_inexact_array))]
    assert floats and all(x.dtype == jnp.float32 for x in floats)
    assert any(not np.array_equal(a, b) for a, b in zip(arrays(new.online), arrays(state.online)))
    for a, b in zip(arrays(new.online), arrays(new.target)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("field, value", [
    ("alpha", 1.5), ("beta", -1.0), ("eta", 0.0), ("num_bins", 1), ("num_atoms", 1), ("v_max", -100.0),
    ("compute_dtype", "float16"), ("target_polyak_tau", 0.0), ("num_action_samples", 0), ("network", "xxl"),
    ("learning_rate", float("nan")), ("target_update_period", True), ("kl_epsilon", 0.0),
    ("learn_temperature", "yes"), ("dual_learning_rate", -1.0),
    ("learning_rate_decay_steps", -1), ("attention", "flash"), ("attention", "cudnn"),  # cudnn needs bf16
])
def test_config_validation(field, value):
    with pytest.raises(ConfigError, match=field if field != "network" else "Unknown"):
        pac.PACConfig(**{field: value}).validate()


def test_task_specs_must_be_vectors_with_continuous_actions():
    atari = StepSpec(ArraySpec((4, 84, 84), "uint8"), ArraySpec((), "int32"), num_actions=6)
    with pytest.raises(SpecMismatchError, match="continuous"):
        pac.init(jax.random.PRNGKey(0), [SPECS[0], atari], CONFIG)
    with pytest.raises(SpecMismatchError, match="at least one"):
        pac.task_sizes([])


_SHARDED = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests_dir!r})
    import equinox as eqx, jax, numpy as np
    from test_pac import CONFIG, SPECS, make_batch
    from rillet.errors import SpecMismatchError
    from rillet.learners import pac

    assert jax.device_count() == 8, jax.devices()
    ref = np.load({ref_path!r})
    mesh = pac.make_mesh()
    state = pac.replicate(pac.init(jax.random.PRNGKey(0), SPECS, CONFIG), mesh)
    batch = pac.shard_batch(make_batch(), mesh)
    assert len(batch["observation"].sharding.device_set) == 8
    new_state, metrics = pac.update(state, batch, CONFIG)
    for k, v in metrics.items():
        np.testing.assert_allclose(v, ref["metric_" + k], rtol=1e-4, atol=1e-5, err_msg=k)
    leaves = jax.tree.leaves(eqx.filter(new_state, eqx.is_array))
    diff = max(float(np.abs(np.asarray(a) - ref[f"leaf_{{i}}"]).max()) for i, a in enumerate(leaves))
    assert diff < 1e-5, diff
    try:
        pac.shard_batch(make_batch(12), mesh)
        raise AssertionError("expected SpecMismatchError")
    except SpecMismatchError:
        pass
    print("SHARDED-OK", diff)
    """
)


def test_sharded_update_on_8_cpu_devices_equals_unsharded(state, tmp_path):
    # The unsharded reference is computed here (the update is already compiled in this process);
    # the device count is fixed when JAX starts, so the 8-device run needs a fresh interpreter.
    new_state, metrics = pac.update(state, make_batch(), CONFIG)
    ref = {f"metric_{k}": np.asarray(v) for k, v in metrics.items()}
    ref.update({f"leaf_{i}": a for i, a in enumerate(arrays(new_state))})
    np.savez(tmp_path / "ref.npz", **ref)
    script = _SHARDED.format(tests_dir=os.path.dirname(os.path.abspath(__file__)), ref_path=str(tmp_path / "ref.npz"))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and "SHARDED-OK" in proc.stdout, proc.stdout + proc.stderr[-4000:]
