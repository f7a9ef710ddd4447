"""R2D2 learner: learning, burn-in without gradients, masking, priorities, LSTM resets, config."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError, SpecMismatchError
from rillet.learners import r2d2
from rillet.learners.sequence_targets import sequence_priorities

SPEC = StepSpec(ArraySpec((4,), "float32"), ArraySpec((), "int32"), num_actions=3, env_id="CartPole-like")
CFG = r2d2.R2D2Config(burn_in=3, trace_length=6, n_step=3, lstm_size=16, hidden_sizes=(16,),
                      learning_rate=3e-3, adam_eps=1e-8, target_update_period=1000, gamma=0.9)
B, L = 4, CFG.sequence_length


def make_batch(seed=0, ends=(None, 7, 4, 1), terminal=True, length=L):
    """B sequences of `length` steps; sequence b ends (is_last) at step ends[b] and is zero-padded after it."""
    rng = np.random.default_rng(seed)
    H, A = CFG.lstm_size, SPEC.num_actions
    action = rng.integers(0, A, (B, length)).astype(np.int32)
    reward = rng.normal(size=(B, length)).astype(np.float32)
    batch = {
        "observation": rng.normal(size=(B, length, 4)).astype(np.float32),
        "action": action, "reward": reward,
        "discount": np.ones((B, length), np.float32),
        "is_first": np.zeros((B, length), bool), "is_last": np.zeros((B, length), bool),
        "is_terminal": np.zeros((B, length), bool), "mask": np.ones((B, length), bool),
        "extras": {
            "recurrent_state_h": rng.normal(size=(B, length, H)).astype(np.float32) * 0.3,
            "recurrent_state_c": rng.normal(size=(B, length, H)).astype(np.float32) * 0.3,
            "behaviour_prob": rng.uniform(0.2, 1.0, (B, length)).astype(np.float32),
            "prev_action": np.concatenate([np.zeros((B, 1), np.int32), action[:, :-1]], 1),
            "prev_reward": np.concatenate([np.zeros((B, 1), np.float32), reward[:, :-1]], 1),
        },
    }
    batch["is_first"][1, 0] = True
    for b, e in enumerate(ends):
        if e is None:
            continue
        batch["is_last"][b, e] = True
        batch["is_terminal"][b, e] = terminal
        batch["discount"][b, e - 1] = 0.0 if terminal else 1.0
        batch["reward"][b, e] = batch["discount"][b, e] = 0.0
        pad = slice(e + 1, None)
        for k in ("observation", "action", "reward", "discount", "is_first", "is_last", "is_terminal", "mask"):
            batch[k][b, pad] = 0
        for v in batch["extras"].values():
            v[b, pad] = 0
    return batch


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def trees_equal(a, b):
    la, lb = leaves(a), leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


loss_fn = eqx.filter_jit(r2d2.sequence_loss)


@pytest.fixture(scope="module")
def state():
    return r2d2.init(jax.random.PRNGKey(0), SPEC, CFG)


@pytest.mark.parametrize("estimator", ["nstep", "retrace", "peng"])
def test_update_lowers_the_loss_on_a_fixed_batch(state, estimator):
    cfg = dataclasses.replace(CFG, estimator=estimator)
    batch = make_batch(1)
    first_loss = float(loss_fn(state.online, state.target, batch, cfg)[0])
    s = state
    for _ in range(40):
        s, metrics = r2d2.update(s, batch, cfg)
        assert np.isfinite(float(metrics["loss"]))
    assert int(s.steps) == 40
    assert float(loss_fn(s.online, s.target, batch, cfg)[0]) < 0.5 * first_loss


def test_burn_in_prefix_gets_exactly_zero_gradient(state):
    batch = make_batch(2, ends=(None, None, 8, None))
    grad = eqx.filter_jit(jax.grad(lambda obs: r2d2.sequence_loss(
        state.online, state.target, {**batch, "observation": obs}, CFG)[0]))(jnp.asarray(batch["observation"]))
    grad = np.asarray(grad)
    assert np.all(grad[:, : CFG.burn_in] == 0.0)
    assert np.all(np.abs(grad[:, CFG.burn_in: CFG.burn_in + CFG.trace_length]).sum(-1).sum(0) > 0)
    # ... while the burn-in observations do change the loss (through the warmed-up state).
    shifted = {**batch, "observation": batch["observation"] + np.float32(1.0) * (np.arange(L) < CFG.burn_in)[None, :, None]}
    assert float(loss_fn(state.online, state.target, shifted, CFG)[0]) != float(loss_fn(state.online, state.target, batch, CFG)[0])


@pytest.mark.parametrize("estimator", ["nstep", "retrace"])
def test_padded_and_invalid_steps_do_not_change_loss_or_priorities(state, estimator):
    cfg = dataclasses.replace(CFG, estimator=estimator)
    batch = make_batch(3)
    dirty = jax.tree.map(np.copy, batch)
    rng = np.random.default_rng(4)
    for b in (1, 2, 3):
        e = int(np.argmax(batch["is_last"][b]))
        pad = slice(e + 1, None)
        n = L - e - 1
        dirty["observation"][b, pad] = rng.normal(size=(n, 4)) * 100
        dirty["action"][b, e:] = rng.integers(0, SPEC.num_actions, n + 1)  # the last step's action is unused too
        dirty["reward"][b, e:] = rng.normal(size=n + 1) * 100
        dirty["discount"][b, e:] = 1.0
        dirty["extras"]["behaviour_prob"][b, e:] = rng.uniform(0.01, 1, n + 1)
        dirty["extras"]["prev_reward"][b, pad] = 55.0
    loss, aux = loss_fn(state.online, state.target, batch, cfg)
    loss2, aux2 = loss_fn(state.online, state.target, dirty, cfg)
    assert float(loss) == float(loss2)
    np.testing.assert_array_equal(np.asarray(aux["td"]), np.asarray(aux2["td"]))
    valid = np.asarray(aux["valid"])
    assert valid.sum(1).tolist() == [6, 4, 1, 0]  # ends at 7, 4 (during the trace), 1 (in burn-in)
    _, m1 = r2d2.update(state, batch, cfg)
    _, m2 = r2d2.update(state, dirty, cfg)
    np.testing.assert_array_equal(np.asarray(m1["priorities"]), np.asarray(m2["priorities"]))
    assert float(m1["priorities"][3]) == 0.0  # no valid step


def test_priorities_formula(state):
    batch = make_batch(5)
    _, aux = loss_fn(state.online, state.target, batch, CFG)
    _, metrics = r2d2.update(state, batch, CFG)
    td, valid = np.abs(np.asarray(aux["td"], np.float64)), np.asarray(aux["valid"])
    for b in range(B):
        d = td[b][valid[b]]
        want = 0.9 * d.max() + 0.1 * d.mean() if d.size else 0.0
        np.testing.assert_allclose(float(metrics["priorities"][b]), want, rtol=1e-5)
    got = sequence_priorities(jnp.array([[1.0, -3.0, 100.0]]), jnp.array([[True, True, False]]), 0.5)
    np.testing.assert_allclose(np.asarray(got), [0.5 * 3 + 0.5 * 2])


def test_unroll_resets_state_at_is_first_and_matches_step():
    cfg = dataclasses.replace(CFG, hidden_sizes=(8,), lstm_size=8)
    net = r2d2.build_network(SPEC, cfg, jax.random.PRNGKey(1))
    rng = np.random.default_rng(6)
    T_, B_, k = 7, 3, 4
    obs = jnp.asarray(rng.normal(size=(T_, B_, 4)), jnp.float32)
    pa = jnp.asarray(rng.integers(0, 3, (T_, B_)), jnp.int32)
    pr = jnp.asarray(rng.normal(size=(T_, B_)), jnp.float32)
    first = np.zeros((T_, B_), bool)
    first[k, 0] = True
    state = tuple(jnp.asarray(rng.normal(size=(B_, 8)), jnp.float32) for _ in range(2))
    unroll = eqx.filter_jit(lambda n, o, a, r, f, s: n.unroll(o, {"prev_action": a, "prev_reward": r}, f, s))
    features, heads, final = unroll(net, obs, pa, pr, jnp.asarray(first), state)
    q = heads["q"]
    assert q.shape == (T_, B_, 3) and features.shape == (T_, B_, 8) and final[0].shape == (B_, 8)
    q_fresh = unroll(net, obs[k:], pa[k:], pr[k:], jnp.zeros((T_ - k, B_), bool), net.initial_state(B_))[1]["q"]
    np.testing.assert_allclose(np.asarray(q[k:, 0]), np.asarray(q_fresh[:, 0]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(q[k:, 1]), np.asarray(q_fresh[:, 1]))  # no reset: history matters
    s = state
    for t in range(T_):
        _, heads_t, s = net.step(obs[t], {"prev_action": pa[t], "prev_reward": pr[t]}, jnp.asarray(first[t]), s)
        q_t = heads_t["q"]
        np.testing.assert_allclose(np.asarray(q_t), np.asarray(q[t]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(s[1]), np.asarray(final[1]), rtol=1e-5, atol=1e-6)


def test_atari_network_shapes():
    atari = StepSpec(ArraySpec((4, 84, 84), "uint8"), ArraySpec((), "int32"), num_actions=6)
    net = r2d2.build_network(atari, dataclasses.replace(CFG, lstm_size=32, dueling=True), jax.random.PRNGKey(0))
    obs = jnp.zeros((2, 3, 4, 84, 84), jnp.uint8)
    _, heads, (h, c) = net.unroll(obs, {"prev_action": jnp.zeros((2, 3), jnp.int32), "prev_reward": jnp.zeros((2, 3))},
                                  jnp.zeros((2, 3), bool), net.initial_state(3))
    q = heads["q"]
    assert q.shape == (2, 3, 6) and h.shape == c.shape == (3, 32)


def test_spec_extras():
    spec = r2d2.spec_extras(SPEC, CFG)
    assert set(spec.extras) == set(r2d2.EXTRAS)
    assert spec.extras["recurrent_state_h"] == ArraySpec((16,), "float32")
    assert spec.extras["prev_action"] == ArraySpec((), "int32")
    assert spec.extras["behaviour_prob"] == ArraySpec((), "float32")


@pytest.mark.parametrize("field, value", [
    ("burn_in", -1), ("trace_length", 0), ("n_step", 0), ("lambda_", 1.5), ("gamma", -0.1),
    ("priority_eta", 2.0), ("target_update_period", 0), ("learning_rate", 0.0), ("lstm_size", 0),
    ("hidden_sizes", ()), ("value_rescaling", "yes"), ("max_grad_norm", -1.0), ("burn_in", 2.5),
    ("scan_unroll", 0),
])
def test_config_validation(field, value):
    with pytest.raises(ConfigError, match=field):
        dataclasses.replace(CFG, **{field: value}).validate()


def test_unknown_estimator_and_wrong_sequence_length(state):
    with pytest.raises(ConfigError, match="tree_backup"):
        r2d2.init(jax.random.PRNGKey(0), SPEC, dataclasses.replace(CFG, estimator="vtrace"))
    assert r2d2.R2D2Config().validate().sequence_length == 121
    short = jax.tree.map(lambda x: x[:, :-1], make_batch(0))
    with pytest.raises(SpecMismatchError, match="length"):
        r2d2.sequence_loss(state.online, state.target, short, CFG)
    with pytest.raises(ConfigError):
        r2d2.init(jax.random.PRNGKey(0), StepSpec(ArraySpec((4,), "float32"), ArraySpec((2,), "float32")), CFG)


def test_scan_unroll_changes_speed_not_the_update(state):
    batch = make_batch(5)
    base, m_base = r2d2.update(state, batch, CFG)
    for unroll in (2, 5, 10):  # 5 does not divide the 9 steps after burn-in: a remainder iteration
        new, m_new = r2d2.update(state, batch, dataclasses.replace(CFG, scan_unroll=unroll))
        np.testing.assert_allclose(float(m_new["loss"]), float(m_base["loss"]), rtol=1e-5)
        for x, y in zip(leaves(new.online), leaves(base.online)):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_determinism_and_target_copy():
    cfg = dataclasses.replace(CFG, target_update_period=2)
    s1, s2 = (r2d2.init(jax.random.PRNGKey(3), SPEC, cfg) for _ in range(2))
    assert trees_equal(s1, s2)
    batch = make_batch(7)
    a, ma = r2d2.update(s1, batch, cfg)
    b, mb = r2d2.update(s2, batch, cfg)
    assert trees_equal(a, b) and trees_equal(ma, mb)
    assert not trees_equal(a.online, a.target)  # step 1: no copy yet
    a, _ = r2d2.update(a, batch, cfg)
    assert trees_equal(a.online, a.target)  # step 2: hard copy


def test_target_epsilon_separates_the_trace_estimators(state):
    """With a greedy target policy Retrace, Watkins and tree-backup coincide; a soft one separates them."""
    batch = make_batch(3)

    def loss(estimator, eps):
        cfg = dataclasses.replace(CFG, estimator=estimator, target_epsilon=eps, lambda_=0.9)
        return float(loss_fn(state.online, state.target, batch, cfg)[0])

    greedy = [loss(e, 0.0) for e in ("retrace", "watkins", "tree_backup")]
    np.testing.assert_allclose(greedy, greedy[0], rtol=1e-6)
    soft = [loss(e, 0.2) for e in ("retrace", "watkins", "tree_backup")]
    assert len({round(x, 6) for x in soft}) == 3, soft
    with pytest.raises(ConfigError, match="target_epsilon"):
        dataclasses.replace(CFG, target_epsilon=1.5).validate()
