"""Return estimators against slow loop references of their defining recursions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.errors import ConfigError
from rillet.learners import returns

T, A, B = 9, 3, 48


def h_np(x, eps=1e-3):
    return np.sign(x) * (np.sqrt(np.abs(x) + 1) - 1) + eps * x


def h_inv_np(y, eps=1e-3):  # solve eps*u^2 + u - (1 + eps + |y|) = 0 for u = sqrt(|x| + 1), in float64
    u = (-1 + np.sqrt(1 + 4 * eps * (1 + eps + np.abs(y)))) / (2 * eps)
    return np.sign(y) * (u * u - 1)


def make_case(seed, greedy_frac=0.6):
    """B random sequences with discount-0 episode ends and padded tails (valid length k in 1..T)."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, T + 1, A)).astype(np.float32) * 3
    pi = rng.dirichlet(np.ones(A), size=(B, T + 1)).astype(np.float32)
    pi[: B // 2] = np.eye(A, dtype=np.float32)[rng.integers(0, A, (B // 2, T + 1))]  # greedy targets
    a = rng.integers(0, A, (B, T + 1)).astype(np.int32)
    greedy = rng.random((B, T + 1)) < greedy_frac  # make many taken actions the target's argmax
    a = np.where(greedy, pi.argmax(-1), a).astype(np.int32)
    r = rng.normal(size=(B, T)).astype(np.float32)
    d = np.where(rng.random((B, T)) < 0.15, 0.0, 0.97).astype(np.float32)
    mu = rng.uniform(0.05, 1.0, (B, T)).astype(np.float32)
    k = rng.integers(1, T + 1, B)
    k[:4] = T  # some unpadded sequences
    mask = np.arange(T)[None, :] < k[:, None]
    return dict(q=q, a=a, r=r, d=d, pi=pi, mu=mu, mask=mask)


def reference(name, q, a, r, d, pi, mu, mask, lam, n, rescale):
    """One sequence, float64, straight from the recursion (loop over t backwards / forwards)."""
    q = np.asarray(q, np.float64)
    if rescale:
        q = h_inv_np(q)
    pi = np.asarray(pi, np.float64)
    v = (pi * q).sum(-1)  # E_pi Q(x_t) [T+1]
    k = int(mask.sum())  # valid prefix length

    def c(t):
        if name == "retrace":
            return lam * min(1.0, pi[t, a[t]] / mu[t])
        if name == "watkins":
            return lam * float(a[t] == pi[t].argmax())
        if name == "tree_backup":
            return lam * pi[t, a[t]]
        raise AssertionError(name)

    g = np.zeros(T)
    if name == "nstep":
        for t in range(k):
            total, disc = 0.0, 1.0
            for j in range(t, min(t + n, k)):
                total += disc * r[j]
                disc *= d[j]
            g[t] = total + disc * v[min(t + n, k)]
    elif name == "peng":
        def peng(t, depth):
            end = t == k - 1 or (n is not None and depth == n - 1)
            if end:
                return r[t] + d[t] * v[t + 1]
            return r[t] + d[t] * ((1 - lam) * v[t + 1] + lam * peng(t + 1, depth + 1))
        for t in range(k):
            g[t] = peng(t, 0)
    else:
        g[k - 1] = r[k - 1] + d[k - 1] * v[k]
        for t in range(k - 2, -1, -1):
            ct = c(t + 1)
            g[t] = r[t] + d[t] * (v[t + 1] - ct * q[t + 1, a[t + 1]] + ct * g[t + 1])
    if rescale:
        g = h_np(g)
    return np.where(mask, g, 0.0)


@functools.partial(jax.jit, static_argnames=("name", "n", "rescale"))
def batched(name, case, lam, n, rescale):
    fn = lambda q, a, r, d, pi, mu, m: returns.returns_for(  # noqa: E731
        name, q, a, r, d, pi, mu, m, lambda_=lam, n=n, value_rescaling=rescale)
    return jax.vmap(fn)(case["q"], case["a"], case["r"], case["d"], case["pi"], case["mu"], case["mask"])


def check(name, case, lam, n, rescale, rtol=2e-5, atol=2e-5):
    got = np.asarray(batched(name, case, jnp.float32(lam), n, rescale))
    for b in range(B):
        want = reference(name, *(case[f][b] for f in ("q", "a", "r", "d", "pi", "mu", "mask")), lam, n, rescale)
        np.testing.assert_allclose(got[b], want, rtol=rtol, atol=atol, err_msg=f"{name} sequence {b}")
    return got


@pytest.mark.parametrize("name", ["retrace", "peng", "watkins", "tree_backup"])
@pytest.mark.parametrize("rescale", [False, True])
def test_lambda_estimators_match_reference(name, rescale):
    case = make_case(seed=1)
    n = 4 if name == "peng" else None
    for lam in (0.0, 0.7, 1.0):
        check(name, case, lam, n, rescale)


@pytest.mark.parametrize("n", [1, 3, 5, T + 2])
@pytest.mark.parametrize("rescale", [False, True])
def test_nstep_matches_reference(n, rescale):
    check("nstep", make_case(seed=2), 0.0, n, rescale)


def test_peng_untruncated_matches_reference_and_lambda_one_is_monte_carlo():
    case = make_case(seed=3)
    check("peng", case, 0.8, None, False)
    full = check("peng", case, 1.0, None, False)
    np.testing.assert_allclose(full, np.asarray(batched("nstep", case, jnp.float32(0), T, False)), rtol=1e-5, atol=1e-5)


def test_lambda_zero_is_one_step_for_every_estimator():
    case = make_case(seed=4)
    one_step = np.asarray(batched("nstep", case, jnp.float32(0), 1, False))
    for name in ("retrace", "peng", "watkins", "tree_backup"):
        got = np.asarray(batched(name, case, jnp.float32(0.0), 3, False))
        np.testing.assert_allclose(got, one_step, rtol=1e-6, atol=1e-6, err_msg=name)


def test_watkins_with_all_greedy_actions_equals_peng_and_cuts_at_first_exploratory_action():
    case = make_case(seed=5)
    case["pi"] = np.eye(A, dtype=np.float32)[case["q"].argmax(-1)]  # greedy in the bootstrap values
    case["a"] = case["pi"].argmax(-1).astype(np.int32)
    w = np.asarray(batched("watkins", case, jnp.float32(0.9), None, False))
    p = np.asarray(batched("peng", case, jnp.float32(0.9), None, False))
    np.testing.assert_allclose(w, p, rtol=1e-5, atol=1e-5)
    case["a"][:, 3] = (case["a"][:, 3] + 1) % A  # exploratory action at step 3: targets of t < 3 stop at x_3
    w = np.asarray(batched("watkins", case, jnp.float32(0.9), None, False))
    one = np.asarray(batched("watkins", case, jnp.float32(0.0), None, False))
    full = case["mask"].all(1)
    np.testing.assert_allclose(w[full, 2], one[full, 2], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", returns.ESTIMATORS)
def test_padded_tails_do_not_leak(name):
    case = make_case(seed=6)
    before = np.asarray(batched(name, case, jnp.float32(0.9), 3, True))
    dirty = {k: v.copy() for k, v in case.items()}
    rng = np.random.default_rng(7)
    for b in range(B):
        k = int(case["mask"][b].sum())
        for f in ("r", "d", "mu"):
            dirty[f][b, k:] = np.nan if f != "mu" else 0.0
        dirty["a"][b, k + 1:] = rng.integers(-5, 50, T - k)  # even out-of-range actions
        dirty["q"][b, k + 1:] = np.nan
        dirty["pi"][b, k + 1:] = np.nan
    after = np.asarray(batched(name, dirty, jnp.float32(0.9), 3, True))
    np.testing.assert_array_equal(after, before)
    assert np.all(after[~case["mask"]] == 0)


def test_h_and_h_inv_are_inverses_over_a_wide_range():
    x = np.concatenate([-np.logspace(-8, 6, 4000), [0.0], np.logspace(-8, 6, 4000)]).astype(np.float32)
    hx = np.asarray(returns.h(x))
    # the same functions as rlax's (which lose float32 precision near 0); rlax is absent on current JAX
    rlax = pytest.importorskip("rlax")
    np.testing.assert_allclose(hx, np.asarray(rlax.signed_hyperbolic(jnp.asarray(x), 1e-3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(returns.h_inv(x)), np.asarray(rlax.signed_parabolic(jnp.asarray(x), 1e-3)),
                               rtol=5e-4, atol=1e-3)
    np.testing.assert_allclose(hx, h_np(x.astype(np.float64)), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(returns.h_inv(hx)), x, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(returns.h(returns.h_inv(x))), x, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(returns.h_inv(x)), h_inv_np(x.astype(np.float64)), rtol=2e-6, atol=1e-7)


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(ConfigError, match="retrace") as err:
        returns.returns_for("q_sigma", jnp.zeros((3, 2)), jnp.zeros(3, int), jnp.zeros(2), jnp.zeros(2),
                            jnp.ones((3, 2)) / 2)
    assert all(n in str(err.value) for n in returns.ESTIMATORS)
