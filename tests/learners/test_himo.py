"""HiMo on the recurrent core: the stop-gradients of its three losses, the look-ahead (phi at step t reads
h_{t+k}, never past the mask) against a step-by-step loop, untruncated n-step targets, alpha = beta = 0 is
R2D2's loss, metrics and config validation."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.errors import ConfigError, SpecMismatchError
from rillet.learners import himo, r2d2, returns
from tests.learners.test_r2d2 import CFG, SPEC, make_batch

CONFIG = himo.HiMoConfig(**{f.name: getattr(CFG, f.name) for f in dataclasses.fields(CFG)},
                         hindsight_size=2, lookahead=2, hindsight_hidden=8, alpha=0.5, beta=2.0)
L = CONFIG.sequence_length  # 3 + 6 + 3 + 2 = 14
BI, T, K = CONFIG.burn_in, CONFIG.trace_length, CONFIG.lookahead


@pytest.fixture(scope="module")
def state():
    return himo.init(jax.random.PRNGKey(1), SPEC, CONFIG)


def batch_of(seed=0, ends=(None, 7, 4, 1)):
    return make_batch(seed, ends=ends, length=L)


def term_grads(state, batch, config=CONFIG):
    """{term: d term / d online parameters} for each of HiMo's three losses."""
    params, static = eqx.partition(state.online, eqx.is_inexact_array)

    def term(name):
        return lambda p: himo.loss_terms(eqx.combine(p, static), state.target, batch, config)[0][name]
    return eqx.filter_jit(lambda p: {name: jax.grad(term(name))(p) for name in himo.LOSS_TERMS})(params)


def all_zero(tree):
    return all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(tree))


def test_sequence_length_and_shapes(state):
    assert L == BI + T + CONFIG.n_step + K
    features, online, target = himo.unroll(state.online, state.target, batch_of(), CONFIG)
    W = L - BI - 1
    assert features.shape == (4, W + 1, 16) and online["q"].shape == (4, W + 1, 3)
    assert online["phi"].shape == (4, W + 1, 2) and target["q"].shape == (4, W + 1, 3)


def test_stop_gradients(state):
    grads = term_grads(state, batch_of(seed=2))
    core = lambda g: (g.torso, g.core)  # noqa: E731  (the features h_t come from these)
    q_head, phi_head = (lambda g: g.heads["q"]), (lambda g: g.heads["phi"])
    model = grads["model_loss"]  # trains phi_hat and h_t, never phi
    assert all_zero(phi_head(model)) and not all_zero(q_head(model).phi) and not all_zero(core(model))
    plus = grads["hindsight_loss"]  # trains phi and psi, never h_t (nor h_{t+k}) nor q_m's head
    assert all_zero(core(plus)) and all_zero(q_head(plus))
    assert not all_zero(phi_head(plus).phi) and not all_zero(phi_head(plus).psi)
    value = grads["q_loss"]  # trains psi' and h_t, never phi_hat (sg) nor the hindsight head
    assert all_zero(q_head(value).phi) and all_zero(phi_head(value))
    assert not all_zero(q_head(value).psi) and not all_zero(core(value))


def loop_features(network, batch):
    """h [B, L, H] by stepping the core one step at a time from the stored state of step 0."""
    ex = batch["extras"]
    state = (jnp.asarray(ex["recurrent_state_h"][:, 0]), jnp.asarray(ex["recurrent_state_c"][:, 0]))
    out = []
    for t in range(L):
        inputs = {i.name: jnp.asarray(ex[i.name][:, t]) for i in network.inputs}
        h, _, state = network.step(jnp.asarray(batch["observation"][:, t]), inputs, batch["is_first"][:, t], state)
        out.append(np.asarray(h))
    return np.stack(out, 1)


def loop_hindsight_mask(batch):
    keep = np.zeros((4, T), bool)
    for b in range(4):
        for t in range(BI, BI + T):
            same_episode = not any(batch["is_last"][b, t + j] or batch["is_first"][b, t + j + 1] for j in range(K))
            keep[b, t - BI] = batch["mask"][b, t + K] and same_episode
    return keep


def test_phi_reads_exactly_h_t_plus_k_never_past_the_mask(state):
    batch = batch_of(seed=3, ends=(None, 9, 4, 1))
    batch["is_first"][0, BI + 4] = True  # an episode starting inside sequence 0 (no padding before it)
    batch["is_last"][0, BI + 3] = True
    terms, aux = himo.loss_terms(state.online, state.target, batch, CONFIG)
    h = loop_features(state.online, batch)
    want = np.asarray(state.online.heads["phi"](jnp.asarray(h[:, BI + K:BI + K + T])))
    np.testing.assert_allclose(np.asarray(aux["phi"]), want, rtol=1e-5, atol=1e-6)
    keep = loop_hindsight_mask(batch) & np.asarray(aux["valid"])
    np.testing.assert_array_equal(np.asarray(aux["hindsight_valid"]), keep)
    assert keep[1].tolist() == [True, True, True, True, True, False]  # ends at 9: t + 2 <= 9 up to t = 7
    assert keep[0].tolist() == [True, True, False, False, True, True]  # last at 6, first at 7
    dirty = jax.tree.map(np.copy, batch)  # what lies past each end never reaches the losses
    for b, e in ((1, 9), (2, 4)):
        dirty["observation"][b, e + 1:] = 100.0
        dirty["extras"]["prev_reward"][b, e + 1:] = 55.0
    dirty_terms, _ = himo.loss_terms(state.online, state.target, dirty, CONFIG)
    assert all(float(terms[k]) == float(dirty_terms[k]) for k in himo.LOSS_TERMS)


def test_every_trained_step_gets_its_full_n_step_target(state):
    """No sequence end cuts the targets: on sequence 0 (no episode end) G_t is the n-step double-Q target
    to t + n, also for the trace's last steps (R2D2 on its own L would cut them at the trace's end)."""
    batch, n, g = batch_of(seed=4), CONFIG.n_step, CONFIG.gamma
    _, online, target = himo.unroll(state.online, state.target, batch, CONFIG)
    _, aux = himo.loss_terms(state.online, state.target, batch, CONFIG)
    q, q_t = np.asarray(online["q"][0], np.float64), np.asarray(target["q"][0], np.float64)
    r = batch["reward"][0, BI:]
    for t in range(T):
        boot = returns.h_inv(q_t[t + n, np.argmax(q[t + n])])
        want = returns.h(sum(g ** j * r[t + j] for j in range(n)) + g ** n * boot)
        got = float(aux["td"][0, t] + aux["q_taken"][0, t])
        np.testing.assert_allclose(got, float(want), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n_step, ends", [(3, (8, 7, 4, 1)), (1, (None, 7, 4, 1))])
def test_zero_weights_give_r2d2s_loss_and_gradient(n_step, ends):
    """alpha = beta = 0: HiMo's loss and gradient are R2D2's (`r2d2.sequence_loss` on R2D2's sequence of the
    same steps) for q_m, wherever R2D2's targets are not cut by its shorter sequence."""
    config = dataclasses.replace(CONFIG, alpha=0.0, beta=0.0, n_step=n_step)
    host = r2d2.R2D2Config(**{f.name: getattr(config, f.name) for f in dataclasses.fields(r2d2.R2D2Config)})
    state = himo.init(jax.random.PRNGKey(2), SPEC, config)
    batch = make_batch(5, ends=ends, length=config.sequence_length)
    short = jax.tree.map(lambda x: x[:, :host.sequence_length], batch)
    params, static = eqx.partition(state.online, eqx.is_inexact_array)
    loss, grad = jax.jit(jax.value_and_grad(lambda p: himo.sequence_loss(eqx.combine(p, static), state.target, batch,
                                                                 config)[0]))(params)
    ref, ref_grad = jax.jit(jax.value_and_grad(lambda p: r2d2.sequence_loss(eqx.combine(p, static), state.target, short,
                                                                    host)[0]))(params)
    assert float(loss) > 0
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)


def test_update_learns_and_reports_each_term(state):
    batch = batch_of(seed=6)
    s, first = himo.update(state, batch, CONFIG)
    for _ in range(30):
        s, metrics = himo.update(s, batch, CONFIG)
    for name in ("loss", *himo.LOSS_TERMS, "model_error", "mean_q", "grad_norm", "hindsight_mean_q"):
        assert np.isfinite(float(metrics[name])), name
    assert metrics["priorities"].shape == (4,) and int(metrics["hindsight_steps"]) > 0
    assert float(metrics["loss"]) < 0.5 * float(first["loss"])
    assert float(metrics["hindsight_loss"]) < float(first["hindsight_loss"])
    total = metrics["q_loss"] + CONFIG.alpha * metrics["hindsight_loss"] + CONFIG.beta * metrics["model_loss"]
    np.testing.assert_allclose(float(metrics["loss"]), float(total), rtol=1e-5)


def test_wrong_sequence_length_says_what_to_write(state):
    with pytest.raises(SpecMismatchError, match="lookahead=2 = 14 steps"):
        himo.loss_terms(state.online, state.target, make_batch(0), CONFIG)


@pytest.mark.parametrize("bad", [dict(hindsight_size=0), dict(lookahead=0), dict(lookahead=1.5), dict(alpha=-0.1),
                                 dict(beta=-1.0), dict(hindsight_hidden=0), dict(distillation=True),
                                 dict(trust_region=True), dict(n_step=0)])
def test_bad_options(bad):
    with pytest.raises(ConfigError):
        dataclasses.replace(CONFIG, **bad).validate()
