"""value_ops against hand-computed values and against rlax (importable on the pinned stack only)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.learners import value_ops



def _rlax():
    """rlax, the reference: the pinned stack has it; a current-JAX host cannot import it."""
    return pytest.importorskip("rlax")


def _random(seed, T=7, A=4):
    rng = np.random.default_rng(seed)
    return dict(
        q=rng.normal(size=(T, A)).astype(np.float32),
        a=rng.integers(0, A, T).astype(np.int32),
        r=rng.normal(size=T).astype(np.float32),
        d=(0.9 * (rng.uniform(size=T) > 0.2)).astype(np.float32),
        v=rng.normal(size=T).astype(np.float32),
        lam=rng.uniform(size=T).astype(np.float32),
        c=rng.uniform(size=T).astype(np.float32),
        pi=rng.dirichlet(np.ones(A), T).astype(np.float32),
    )


def test_q_learning_and_double_q_by_hand():
    q_tm1 = jnp.array([1.0, 2.0, 3.0])
    q_next = jnp.array([0.5, 4.0, 1.0])
    selector = jnp.array([9.0, 0.0, 0.0])  # the online net prefers action 0
    assert float(value_ops.q_learning(q_tm1, 2, 1.0, 0.5, q_next)) == pytest.approx(1.0 + 0.5 * 4.0 - 3.0)
    assert float(value_ops.double_q_learning(q_tm1, 0, 1.0, 0.5, q_next, selector)) == pytest.approx(
        1.0 + 0.5 * 0.5 - 1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_td_errors_match_rlax(seed):
    rlax = _rlax()
    x = _random(seed)
    for t in range(5):
        ours = value_ops.double_q_learning(x["q"][t], x["a"][t], x["r"][t], x["d"][t], x["q"][t + 1], x["pi"][t + 1])
        ref = rlax.double_q_learning(x["q"][t], x["a"][t], x["r"][t], x["d"][t], x["q"][t + 1], x["pi"][t + 1])
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(value_ops.q_learning(x["q"][t], x["a"][t], x["r"][t], x["d"][t], x["q"][t + 1]),
                                   rlax.q_learning(x["q"][t], x["a"][t], x["r"][t], x["d"][t], x["q"][t + 1]),
                                   rtol=1e-6, atol=1e-6)


def test_categorical_projection_by_hand():
    z_q = jnp.array([0.0, 1.0, 2.0])
    # 0.5 -> half on 0 and 1; 5.0 clips to 2; -3 clips to 0.
    out = value_ops.categorical_l2_project(jnp.array([0.5, 5.0, -3.0]), jnp.array([0.2, 0.3, 0.5]), z_q)
    np.testing.assert_allclose(out, [0.5 + 0.1, 0.1, 0.3], atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_categorical_projection_matches_rlax_on_uneven_supports(seed):
    rlax = _rlax()
    rng = np.random.default_rng(seed)
    z_q = jnp.asarray(np.sort(rng.uniform(-3, 3, 9)).astype(np.float32))
    z_p = jnp.asarray(rng.uniform(-5, 5, 13).astype(np.float32))
    probs = jnp.asarray(rng.dirichlet(np.ones(13)).astype(np.float32))
    ours = value_ops.categorical_l2_project(z_p, probs, z_q)
    np.testing.assert_allclose(ours, rlax.categorical_l2_project(z_p, probs, z_q), atol=1e-5)
    assert float(jnp.sum(ours)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_lambda_returns_match_rlax_for_scalar_and_per_step_lambda(seed):
    rlax = _rlax()
    x = _random(seed)
    for lam in (0.0, 0.7, 1.0, x["lam"]):
        np.testing.assert_allclose(value_ops.lambda_returns(x["r"], x["d"], x["v"], lam),
                                   rlax.lambda_returns(x["r"], x["d"], x["v"], lam), rtol=1e-5, atol=1e-5)


def test_lambda_returns_by_hand():
    g = value_ops.lambda_returns(jnp.array([1.0, 2.0]), jnp.array([0.5, 0.5]), jnp.array([10.0, 20.0]), 0.5)
    g1 = 2.0 + 0.5 * 20.0  # the last step bootstraps fully
    np.testing.assert_allclose(g, [1.0 + 0.5 * (0.5 * 10.0 + 0.5 * g1), g1], rtol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10])
def test_n_step_returns_match_rlax(n):
    rlax = _rlax()
    x = _random(n)
    for lam in (1.0, x["lam"]):
        np.testing.assert_allclose(value_ops.n_step_bootstrapped_returns(x["r"], x["d"], x["v"], n, lam),
                                   rlax.n_step_bootstrapped_returns(x["r"], x["d"], x["v"], n, lam),
                                   rtol=1e-5, atol=1e-5)


def test_two_step_return_by_hand():
    r, d, v = jnp.array([1.0, 2.0, 3.0]), jnp.array([0.5, 0.5, 0.5]), jnp.array([10.0, 20.0, 30.0])
    g = value_ops.n_step_bootstrapped_returns(r, d, v, 2)
    np.testing.assert_allclose(g, [1.0 + 0.5 * (2.0 + 0.5 * 20.0), 2.0 + 0.5 * (3.0 + 0.5 * 30.0), 3.0 + 0.5 * 30.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_off_policy_returns_match_rlax(seed):
    rlax = _rlax()
    x = _random(seed)
    args = (x["q"], x["a"], x["r"], x["d"], x["c"], x["pi"])
    np.testing.assert_allclose(value_ops.general_off_policy_returns_from_action_values(*args),
                               rlax.general_off_policy_returns_from_action_values(*args), rtol=1e-5, atol=1e-5)


def test_off_policy_returns_with_zero_traces_are_one_step_expected_sarsa():
    x = _random(3)
    g = value_ops.general_off_policy_returns_from_action_values(
        x["q"], x["a"], x["r"], x["d"], np.zeros_like(x["c"]), x["pi"])
    np.testing.assert_allclose(g, x["r"] + x["d"] * np.sum(x["pi"] * x["q"], -1), rtol=1e-5)


def test_value_ops_jit_and_vmap():
    x = _random(4)
    batched = jax.jit(jax.vmap(value_ops.lambda_returns, in_axes=(0, 0, 0, None)))
    out = batched(np.stack([x["r"]] * 3), np.stack([x["d"]] * 3), np.stack([x["v"]] * 3), 0.9)
    assert out.shape == (3, 7)
    np.testing.assert_allclose(out[1], value_ops.lambda_returns(x["r"], x["d"], x["v"], 0.9), rtol=1e-6)
