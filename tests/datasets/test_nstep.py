"""nstep_targets, window_targets and discounted_sum against a slow loop-based reference."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rillet.datasets.nstep import discounted_sum, nstep_targets, window_targets
from rillet.errors import ConfigError, SpecMismatchError


def slow_nstep(rewards, discounts, n, gamma):
    T = len(rewards)
    rets, discs, idx = [], [], []
    for t in range(T):
        m = min(n, T - t)
        ret, disc = 0.0, 1.0
        for k in range(m):
            ret += disc * rewards[t + k]
            disc *= gamma * discounts[t + k]
        rets.append(ret)
        discs.append(disc)
        idx.append(t + m)
    return np.array(rets), np.array(discs), np.array(idx)


def episode(T, terminated, rng):
    rewards = rng.normal(size=T).astype(np.float32)
    discounts = np.ones(T, np.float32)
    if terminated and T:
        discounts[-1] = 0.0
    return rewards, discounts


@settings(max_examples=40, deadline=None)
@given(
    T=st.integers(0, 12),
    n=st.integers(1, 6),
    gamma=st.floats(0.0, 1.0),
    terminated=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_slow_reference(T, n, gamma, terminated, seed):
    rewards, discounts = episode(T, terminated, np.random.default_rng(seed))
    ret, disc, idx = nstep_targets(rewards, discounts, n, gamma)
    want_ret, want_disc, want_idx = slow_nstep(rewards.tolist(), discounts.tolist(), n, gamma)
    assert ret.shape == disc.shape == idx.shape == (T,)
    assert ret.dtype == np.float32 and disc.dtype == np.float32
    np.testing.assert_allclose(ret, want_ret, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(disc, want_disc, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(idx, want_idx)


def test_random_env_discounts_mid_episode():
    """Discounts other than 0/1 (e.g. a soft termination) multiply in at every step."""
    rng = np.random.default_rng(0)
    r, d = rng.normal(size=9), rng.uniform(size=9)
    for n in (1, 3, 20):
        got = nstep_targets(r, d, n, 0.97)
        for a, b in zip(got, slow_nstep(r.tolist(), d.tolist(), n, 0.97)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_one_step_is_reward_and_discount():
    r = np.array([1.0, 2.0, 3.0], np.float32)
    d = np.array([1.0, 1.0, 0.0], np.float32)
    ret, disc, idx = nstep_targets(r, d, 1, 0.9)
    np.testing.assert_allclose(ret, r)
    np.testing.assert_allclose(disc, [0.9, 0.9, 0.0])
    np.testing.assert_array_equal(idx, [1, 2, 3])


def test_terminal_vs_truncated_by_hand():
    r = np.array([1.0, 2.0, 4.0], np.float32)
    term = nstep_targets(r, np.array([1, 1, 0], np.float32), 2, 0.5)
    trunc = nstep_targets(r, np.array([1, 1, 1], np.float32), 2, 0.5)
    # R_0 = 1 + 0.5*2, R_1 = 2 + 0.5*4, R_2 = 4 (window cut at the end, m = 1).
    np.testing.assert_allclose(term[0], [2.0, 4.0, 4.0])
    np.testing.assert_allclose(trunc[0], [2.0, 4.0, 4.0])
    np.testing.assert_allclose(term[1], [0.25, 0.0, 0.0])  # no bootstrap after termination
    np.testing.assert_allclose(trunc[1], [0.25, 0.25, 0.5])  # bootstrap from the last observation
    np.testing.assert_array_equal(term[2], [2, 3, 3])


def test_bad_arguments():
    with pytest.raises(ConfigError, match="n-step"):
        nstep_targets(np.zeros(3), np.ones(3), 0, 0.9)
    with pytest.raises(ConfigError, match="gamma"):
        nstep_targets(np.zeros(3), np.ones(3), 1, 1.1)
    with pytest.raises(SpecMismatchError, match="equal length"):
        nstep_targets(np.zeros(3), np.ones(4), 1, 0.9)


def test_no_tensorflow_import():
    import subprocess
    import sys

    code = "import sys, rillet.datasets.nstep; assert 'tensorflow' not in sys.modules and 'reverb' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_discounted_sum_on_floats_is_the_scalar_case_of_nstep_targets():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 6))
        rewards = rng.normal(size=n)
        discounts = rng.choice([0.0, 0.5, 1.0], size=n)
        returns, totals, _ = nstep_targets(rewards, discounts, n, 0.9)
        ret, tot = discounted_sum(rewards.tolist(), [0.9 * d for d in discounts.tolist()])
        assert isinstance(ret, float) and isinstance(tot, float)
        np.testing.assert_allclose([ret, tot], [returns[0], totals[0]], rtol=1e-6, atol=1e-6)


def test_discounted_sum_by_hand():
    assert discounted_sum([], []) == (0.0, 1.0)
    assert discounted_sum([1.0, 2.0, 4.0], [0.5, 0.5, 0.0]) == (1.0 + 0.5 * 2.0 + 0.25 * 4.0, 0.0)
    ret, tot = discounted_sum([np.array([1.0, 3.0]), np.array([2.0, 0.0])], [np.array([0.5, 1.0])] * 2)
    np.testing.assert_array_equal(ret, [2.0, 3.0])
    np.testing.assert_array_equal(tot, [0.25, 1.0])


def test_window_targets_reads_only_its_windows():
    """Windows of any start and length over a column, padded ends never read (NaN there)."""
    rng = np.random.default_rng(1)
    r, d = rng.normal(size=20).astype(np.float32), rng.uniform(size=20).astype(np.float32)
    starts, lengths = np.array([0, 5, 5, 19, 12, 3]), np.array([3, 1, 0, 1, 8, 4])
    poisoned_r, poisoned_d = np.full(20, np.nan, np.float32), np.full(20, np.nan, np.float32)
    for s, m in zip(starts, lengths):
        poisoned_r[s:s + m], poisoned_d[s:s + m] = r[s:s + m], d[s:s + m]
    ret, tot = window_targets(poisoned_r, poisoned_d, 0.9, starts, lengths)
    assert ret.dtype == tot.dtype == np.float64 and ret.shape == tot.shape == (6,)
    for i, (s, m) in enumerate(zip(starts, lengths)):
        want = slow_nstep(r[s:s + m].tolist(), d[s:s + m].tolist(), m, 0.9)
        np.testing.assert_allclose([ret[i], tot[i]], [want[0][0], want[1][0]] if m else [0.0, 1.0], rtol=1e-6)
    empty = window_targets(r, d, 0.9, np.zeros(0, int), np.zeros(0, int))
    assert empty[0].shape == empty[1].shape == (0,)
