"""TDU on the recurrent core: heads as members on a shared LSTM, per-head sequence TD errors, sigma,
the bonus only in the exploration heads' targets, bootstrap masks over heads."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.errors import ConfigError
from rillet.learners import r2d2, recurrent_tdu, sequence_targets
from tests.learners.test_r2d2 import CFG, SPEC, make_batch

CONFIG = recurrent_tdu.RecurrentTDUConfig(**{f.name: getattr(CFG, f.name) for f in dataclasses.fields(CFG)},
                                          ensemble_size=5, exploration_members=2, tdu_beta=0.5)


@pytest.fixture(scope="module")
def state():
    return recurrent_tdu.init(jax.random.PRNGKey(1), SPEC, CONFIG)


def test_heads_give_their_members(state):
    batch = make_batch()
    online, target = r2d2.unroll(state.online, state.target, batch, CONFIG)
    T = CONFIG.trace_length
    assert online["q"].shape == (4, T + 1, 3, 3) and online["explore"].shape == (4, T + 1, 2, 3)
    assert not np.allclose(np.asarray(online["q"][:, :, 0]), np.asarray(online["q"][:, :, 1]))


def test_member_sequence_td_is_r2d2s_sequence_td_per_head(state):
    batch = make_batch(seed=3)
    online, target = r2d2.unroll(state.online, state.target, batch, CONFIG)
    td, q_taken = recurrent_tdu.member_sequence_td(online["q"], target["q"], batch, CONFIG)
    for k in range(3):
        pi = sequence_targets.target_policy(online["q"][:, :, k], CONFIG.target_epsilon)
        ref, _, ref_q, _ = r2d2.sequence_td(online["q"][:, :, k], target["q"][:, :, k], pi, batch, CONFIG)
        np.testing.assert_allclose(np.asarray(td[k]), np.asarray(ref), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(q_taken[k]), np.asarray(ref_q), rtol=1e-5, atol=1e-6)


def _head_grads(state, config, batch):
    params, static = eqx.partition({"q": state.online}, eqx.is_inexact_array)
    loss = lambda p: recurrent_tdu._loss(eqx.combine(p, static), state.target, batch, config)[0]  # noqa: E731
    return jax.jit(jax.grad(loss))(params)["q"].heads


def test_the_bonus_reaches_only_the_exploration_heads(state):
    batch = make_batch(seed=5)
    plain = _head_grads(state, dataclasses.replace(CONFIG, tdu_beta=0.0), batch)
    bonus = _head_grads(state, CONFIG, batch)
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])  # noqa: E731
    np.testing.assert_allclose(flat(plain["q"].networks), flat(bonus["q"].networks), rtol=1e-5, atol=1e-7)
    assert not np.allclose(flat(plain["explore"].networks), flat(bonus["explore"].networks))
    assert np.all(flat(bonus["q"].priors) == 0) and np.all(flat(bonus["explore"].priors) == 0)


def test_bootstrap_masks_drop_a_heads_loss(state):
    config = dataclasses.replace(CONFIG, bootstrap_probability=0.5)
    batch = make_batch(seed=2)
    mask = np.ones((4, CONFIG.sequence_length, 5), np.float32)
    mask[..., 1] = 0.0  # exploitation head 1 trains on nothing
    grads = _head_grads(state, config, {**batch, "extras": {**batch["extras"], "bootstrap_mask": mask}})
    head1 = [np.asarray(x)[1] for x in jax.tree.leaves(grads["q"].networks)]
    head0 = [np.asarray(x)[0] for x in jax.tree.leaves(grads["q"].networks)]
    assert all(np.all(g == 0) for g in head1) and any(np.any(g != 0) for g in head0)
    assert recurrent_tdu.spec_extras(SPEC, config).extras["bootstrap_mask"].shape == (5,)


def test_update_metrics(state):
    new_state, metrics = recurrent_tdu.update(state, make_batch(seed=4), CONFIG)
    assert int(new_state.steps) == 1 and metrics["priorities"].shape == (4,)
    assert float(metrics["sigma_max"]) >= float(metrics["sigma_mean"]) > 0
    assert all(np.isfinite(float(metrics[k])) for k in ("loss", "disagreement", "explore_mean_q"))


@pytest.mark.parametrize("bad", [dict(exploration_members=4), dict(ensemble_size=2), dict(tdu_beta=-0.1),
                                 dict(distillation=True), dict(bootstrap_probability=1.5)])
def test_bad_options(bad):
    with pytest.raises(ConfigError):
        dataclasses.replace(CONFIG, **bad).validate()
