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


def reference(name, q, a, r, d, pi, mu, mask, lam, n, rescale, kappa=0.01):
    """One sequence, float64, straight from the recursion (loop over t backwards / forwards).
    "q_pi_lambda" is the recursion with c = lambda everywhere (no estimator of its own)."""
    q_in = np.asarray(q, np.float64)  # soft Watkins' cut reads the values as passed in
    q = q_in
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
        if name == "soft_watkins":
            best = max(q_in[t, b] for b in range(q_in.shape[1]))
            return lam * float(q_in[t, a[t]] >= best - kappa * abs(best))
        if name == "tree_backup":
            return lam * pi[t, a[t]]
        if name == "q_pi_lambda":
            return lam
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


@functools.partial(jax.jit, static_argnames=("name", "n", "rescale", "kappa"))
def batched(name, case, lam, n, rescale, kappa=0.01):
    fn = lambda q, a, r, d, pi, mu, m: returns.returns_for(  # noqa: E731
        name, q, a, r, d, pi, mu, m, lambda_=lam, n=n, kappa=kappa, value_rescaling=rescale)
    return jax.vmap(fn)(case["q"], case["a"], case["r"], case["d"], case["pi"], case["mu"], case["mask"])


def check(name, case, lam, n, rescale, rtol=2e-5, atol=2e-5, kappa=0.01, ref_name=None):
    got = np.asarray(batched(name, case, jnp.float32(lam), n, rescale, kappa))
    for b in range(B):
        want = reference(ref_name or name, *(case[f][b] for f in ("q", "a", "r", "d", "pi", "mu", "mask")),
                         lam, n, rescale, kappa)
        np.testing.assert_allclose(got[b], want, rtol=rtol, atol=atol, err_msg=f"{name} sequence {b}")
    return got


@pytest.mark.parametrize("name", ["retrace", "peng", "watkins", "soft_watkins", "tree_backup"])
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
    for name in ("retrace", "peng", "watkins", "soft_watkins", "tree_backup"):
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


def near_greedy_case(seed, kappa):
    """make_case with greedy targets in q, where every non-greedy taken action's value sits u*kappa*|max|
    below the greedy one, u in [0.05, 0.8] (kept) or [1.25, 3] (cut): no float32 borderline cases."""
    case = make_case(seed)
    rng = np.random.default_rng(seed + 100)
    q, best = case["q"], case["q"].argmax(-1)
    case["pi"] = np.eye(A, dtype=np.float32)[best]
    a = np.where(rng.random((B, T + 1)) < 0.3, best, (best + rng.integers(1, A, (B, T + 1))) % A)
    u = np.where(rng.random((B, T + 1)) < 0.5, rng.uniform(0.05, 0.8, (B, T + 1)), rng.uniform(1.25, 3, (B, T + 1)))
    q_max = q.max(-1)
    taken = np.where(a == best, q_max, q_max - u * kappa * np.abs(q_max)).astype(np.float32)
    np.put_along_axis(q, a[..., None], taken[..., None], axis=-1)
    case["a"] = a.astype(np.int32)
    return case


@pytest.mark.parametrize("rescale", [False, True])
def test_soft_watkins_matches_reference_near_its_threshold(rescale):
    for kappa in (0.01, 0.3):
        case = near_greedy_case(seed=8, kappa=kappa)
        for lam in (0.0, 0.8):
            check("soft_watkins", case, lam, None, rescale, kappa=kappa)
    masked = make_case(seed=9)
    masked["mask"][:] = True  # the same without padding
    check("soft_watkins", masked, 0.8, None, rescale, kappa=0.5)


@pytest.mark.parametrize("rescale", [False, True])
def test_soft_watkins_limits_are_watkins_and_q_pi_lambda(rescale):
    case = make_case(seed=10)
    rng = np.random.default_rng(11)
    best = case["q"].argmax(-1)
    case["pi"] = np.eye(A, dtype=np.float32)[best]  # greedy in the bootstrap values (continuous q: no ties)
    case["a"] = np.where(rng.random((B, T + 1)) < 0.6, best, case["a"]).astype(np.int32)
    watkins = np.asarray(batched("watkins", case, jnp.float32(0.9), None, rescale))
    for kappa in (0.0, 1e-7):
        got = np.asarray(batched("soft_watkins", case, jnp.float32(0.9), None, rescale, kappa))
        np.testing.assert_allclose(got, watkins, rtol=1e-6, atol=1e-6, err_msg=f"kappa={kappa}")
    # kappa huge: never cut, c = lambda (Q^pi(lambda)); the expectation is the loop with c = lambda
    never_cut = check("soft_watkins", case, 0.9, None, rescale, kappa=1e9, ref_name="q_pi_lambda")
    assert not np.allclose(never_cut, watkins)  # the two limits differ on these inputs


@pytest.mark.parametrize("q1, cut", [
    ([10.0, 9.95], False), ([10.0, 9.5], True),  # kappa * |max| = 0.1: 9.95 is within it, 9.5 is not
    ([-10.0, -10.05], False), ([-10.0, -10.5], True),  # |max| for a negative greedy value
])
def test_soft_watkins_cuts_only_beyond_kappa(q1, cut):
    """Two transitions, greedy target, taken action 1 at x_1: G_0 = r_0 + d_0 (max Q_1 - c_1 q_1[1] + c_1 G_1)."""
    q = jnp.array([[1.0, 0.0], q1, [3.0, 0.0]])
    pi = jax.nn.one_hot(jnp.argmax(q, -1), 2)
    r, d, lam = jnp.array([1.0, 2.0]), jnp.array([0.9, 0.8]), 0.5
    g = returns.soft_watkins_q_lambda_returns(q, jnp.array([0, 1, 0]), r, d, pi, lambda_=lam, kappa=0.01)
    g1 = 2.0 + 0.8 * 3.0
    c1 = 0.0 if cut else lam
    g0 = 1.0 + 0.9 * (q1[0] - c1 * q1[1] + c1 * g1)
    np.testing.assert_allclose(np.asarray(g), [g0, g1], rtol=1e-6)
    watkins = returns.watkins_q_lambda_returns(q, jnp.array([0, 1, 0]), r, d, pi, lambda_=lam)
    assert np.isclose(float(watkins[0]), 1.0 + 0.9 * q1[0])  # Watkins cuts in every case


def test_kappa_is_checked_for_soft_watkins_only_and_passed_by_sequence_targets():
    from rillet.learners import sequence_targets as st
    args = (jnp.zeros((3, 2)), jnp.zeros(3, int), jnp.zeros(2), jnp.zeros(2), jnp.ones((3, 2)) / 2)
    for bad in (-0.1, float("nan"), "0.01"):
        with pytest.raises(ConfigError, match="kappa"):
            returns.returns_for("soft_watkins", *args, kappa=bad)
    np.testing.assert_array_equal(returns.returns_for("watkins", *args, kappa=-1.0), returns.returns_for("watkins", *args))
    case = near_greedy_case(seed=12, kappa=0.2)
    fields = [case[f][:8] for f in ("q", "pi", "a", "r", "d", "mu", "mask")]
    got = {}
    for kappa in (0.0, 1e9):
        got[kappa] = np.asarray(st.sequence_targets("soft_watkins", *fields, lambda_=0.9, kappa=kappa))
        want = np.asarray(batched("soft_watkins", case, jnp.float32(0.9), 3, False, kappa))[:8]
        np.testing.assert_allclose(got[kappa], want, rtol=1e-6, atol=1e-6)
    assert not np.allclose(got[0.0], got[1e9])


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
