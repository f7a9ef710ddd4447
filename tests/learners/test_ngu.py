"""NGU's learner: the policy family tables, the one-hot policy index reaching the core, the mixed reward
and gamma_j reaching the targets, no gradient from the Q loss into the novelty networks, and a resumed
learner continuing bit for bit (RND statistics included)."""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.learners.recurrent_value import unroll_with_burn_in

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError
from rillet.learners import ngu, r2d2, recurrent_value
from rillet.learners.policy_family import family_betas, family_gammas

SPEC = StepSpec(observation=ArraySpec((6,), "float32"), action=ArraySpec((), "int32"), num_actions=3)
SMALL = ngu.NGUConfig(burn_in=2, trace_length=5, lstm_size=8, hidden_sizes=(8,), novelty_hidden_sizes=(8,),
                      embedding_size=4, rnd_output_size=4, num_policies=4, learning_rate=1e-3,
                      target_update_period=3, memory_capacity=16)


def _beta(j, n, beta=0.3):
    if j == 0:
        return 0.0
    if j == n - 1:
        return beta
    return beta / (1.0 + math.exp(-10.0 * (2 * j - (n - 2)) / (n - 2)))


def _gamma(j, n, g_max=0.997, g_min=0.99):
    return 1.0 - math.exp(((n - 1 - j) * math.log(1 - g_max) + j * math.log(1 - g_min)) / (n - 1))


@pytest.mark.parametrize("n", [2, 5, 32])
def test_family_tables_equal_the_formulas_at_both_ends(n):
    betas, gammas = family_betas(n, 0.3), family_gammas(n, 0.997, 0.99)
    assert betas.shape == gammas.shape == (n,)
    for j in sorted({0, 1, n - 2, n - 1}):
        assert betas[j] == pytest.approx(_beta(j, n), rel=1e-6, abs=1e-7)
        assert gammas[j] == pytest.approx(_gamma(j, n), rel=1e-6)
    assert gammas[0] == pytest.approx(0.997) and gammas[-1] == pytest.approx(0.99)
    assert np.all(np.diff(betas) >= 0) and np.all(np.diff(gammas) <= 0)


def test_family_of_one_and_bad_sizes():
    assert family_betas(1, 0.3).tolist() == [0.0]
    assert family_gammas(1, 0.997, 0.99) == pytest.approx([0.997])
    with pytest.raises(ConfigError, match="num_policies"):
        family_betas(0, 0.3)


def batch(seed=0, B=3, policy_index=None):
    """A random NGU sequence batch (no episode boundaries, all steps real)."""
    L = SMALL.sequence_length
    rng = np.random.default_rng(seed)
    j = np.asarray(policy_index if policy_index is not None else rng.integers(0, SMALL.num_policies, B), np.int32)
    false = np.zeros((B, L), bool)
    return {
        "observation": rng.normal(size=(B, L, 6)).astype(np.float32),
        "action": rng.integers(0, 3, (B, L)).astype(np.int32),
        "reward": rng.normal(size=(B, L)).astype(np.float32),
        "discount": np.ones((B, L), np.float32),
        "is_first": false, "is_last": false, "is_terminal": false, "mask": ~false,
        "extras": {
            "recurrent_state_h": np.zeros((B, L, 8), np.float32), "recurrent_state_c": np.zeros((B, L, 8), np.float32),
            "behaviour_prob": np.full((B, L), 0.9, np.float32),
            "prev_action": rng.integers(0, 3, (B, L)).astype(np.int32),
            "prev_reward": rng.normal(size=(B, L)).astype(np.float32),
            "prev_intrinsic_reward": rng.uniform(0, 1, (B, L)).astype(np.float32),
            "prev_episodic_reward": rng.uniform(0, 1, (B, L)).astype(np.float32),
            "policy_index": np.repeat(j[:, None], L, 1),
        },
    }


def test_policy_index_reaches_the_core_one_hot():
    state = ngu.init(jax.random.PRNGKey(0), SPEC, SMALL)
    names = [(i.name, i.size) for i in state.online.inputs]
    assert ("policy_index", SMALL.num_policies) in names and ("prev_intrinsic_reward", 0) in names
    b0, b1 = batch(1, policy_index=[0, 0, 0]), batch(1, policy_index=[3, 3, 3])
    heads0, _ = unroll_with_burn_in(state.online, state.target, b0, SMALL.burn_in)
    heads1, _ = unroll_with_burn_in(state.online, state.target, b1, SMALL.burn_in)
    assert not np.allclose(heads0["q"], heads1["q"]), "changing j changes Q: the index reaches the core"


def test_mixed_reward_and_gamma_j_reach_the_q_loss():
    """NGU's Q loss equals R2D2's sequence_loss given r_e + beta_j r_i[t+1] and gamma_j per sequence."""
    state = ngu.init(jax.random.PRNGKey(2), SPEC, SMALL)
    b = batch(3)
    bi, T = SMALL.burn_in, SMALL.trace_length
    j = b["extras"]["policy_index"][:, 0]
    reward = b["reward"][:, bi:bi + T] + family_betas(4, 0.3)[j][:, None] * b["extras"]["prev_intrinsic_reward"][:, bi + 1:bi + T + 1]
    expected, _ = r2d2.sequence_loss(state.online, state.target, b, SMALL, reward=jnp.asarray(reward),
                                     gamma=jnp.asarray(family_gammas(4, 0.997, 0.99)[j]))
    modules = {"q": state.online, "embedding": state.embedding, "rnd": state.rnd}
    _, aux = ngu._loss(modules, state.target, b, SMALL, state.rnd_obs_stats, ngu.MIXED_VALUE)
    assert float(aux["q_loss"]) == pytest.approx(float(expected), rel=1e-5)
    plain, _ = r2d2.sequence_loss(state.online, state.target, b, SMALL)  # r_e and config.gamma only
    assert float(aux["q_loss"]) != pytest.approx(float(plain), rel=1e-3)


def test_q_loss_has_no_gradient_into_the_novelty_networks():
    state = ngu.init(jax.random.PRNGKey(4), SPEC, SMALL)
    modules = {"q": state.online, "embedding": state.embedding, "rnd": state.rnd}
    params = eqx.filter(modules, eqx.is_inexact_array)
    static = eqx.filter(modules, eqx.is_inexact_array, inverse=True)

    def q_loss(p):
        return ngu._loss(eqx.combine(p, static), state.target, batch(5), SMALL, state.rnd_obs_stats,
                         ngu.MIXED_VALUE)[1]["q_loss"]

    grads = jax.jit(jax.grad(q_loss))(params)  # one compile, not op-by-op with a scan per call
    for name in ("embedding", "rnd"):
        assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads[name])), name
    assert any(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(grads["q"]))


def test_update_trains_every_group_and_the_rnd_statistics():
    state = ngu.init(jax.random.PRNGKey(6), SPEC, SMALL)
    new, metrics = ngu.update(state, batch(7), SMALL)
    for name in ("online", "embedding"):
        before, after = jax.tree.leaves(eqx.filter(getattr(state, name), eqx.is_inexact_array)), \
            jax.tree.leaves(eqx.filter(getattr(new, name), eqx.is_inexact_array))
        assert any(not np.array_equal(a, b) for a, b in zip(before, after)), name
    leaves = lambda m: jax.tree.leaves(eqx.filter(m, eqx.is_inexact_array))  # noqa: E731
    assert all(np.array_equal(a, b) for a, b in zip(leaves(state.rnd.target), leaves(new.rnd.target)))
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(state.rnd.predictor), leaves(new.rnd.predictor)))
    assert float(new.rnd_stats.count) == SMALL.trace_length * 3  # every valid next observation
    b = batch(7)
    next_obs = b["observation"][:, SMALL.burn_in + 1:SMALL.burn_in + SMALL.trace_length + 1].reshape(-1, 6)
    np.testing.assert_allclose(new.rnd_obs_stats.mean, next_obs.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.rnd_obs_stats.var, next_obs.var(0), rtol=1e-4, atol=1e-6)
    for key in ("loss", "priorities", "embedding_loss", "rnd_loss", "intrinsic_reward", "lifelong_multiplier"):
        assert np.all(np.isfinite(metrics[key])), key
    assert metrics["priorities"].shape == (3,)
    assert 1.0 <= float(metrics["lifelong_multiplier"]) <= SMALL.max_multiplier


def test_casm_embedding_is_trained_on_each_trace_and_embeds_for_the_actors():
    """embedding_model="casm": the embedding group is CASM, trained on each learned trace as one window of
    T + 1 steps (fresh masks every update: the state's key moves on), and its encoder gives the actors'
    e = f(o) of embedding_size through the same `embed` as the inverse-dynamics embedding."""
    from rillet.learners import casm
    from rillet.learners.inverse_dynamics import embed

    config = dataclasses.replace(SMALL, embedding_model="casm", casm_d_model=8, casm_num_heads=2, casm_num_layers=1,
                                 casm_context_length=4)
    state = ngu.init(jax.random.PRNGKey(6), SPEC, config)
    assert isinstance(state.embedding, casm.CASM)
    new, metrics = ngu.update(state, batch(7), config)
    leaves = lambda m: jax.tree.leaves(eqx.filter(m, eqx.is_inexact_array))  # noqa: E731
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(state.embedding), leaves(new.embedding)))
    assert np.isfinite(float(metrics["embedding_loss"])) and 0.0 <= float(metrics["embedding_accuracy"]) <= 1.0
    assert not np.array_equal(state.key, new.key)
    b = batch(7)
    bi, T = config.burn_in, config.trace_length
    key = jax.random.split(state.key)[1]
    want, _ = casm.casm_loss({"embedding": state.embedding}, b["observation"][:, bi:bi + T + 1],
                             b["action"][:, bi:bi + T + 1], recurrent_value.transition_mask(b, bi, T), key)
    got, _ = ngu._embedding_loss(state.embedding, b, config, key)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    assert embed(ngu.acting_params(new).embedding, b["observation"][:, 0]).shape == (3, config.embedding_size)
    with pytest.raises(ConfigError, match="embedding_model"):
        dataclasses.replace(SMALL, embedding_model="siamese").validate()


def test_learner_resumes_bit_for_bit(tmp_path):
    pytest.importorskip("orbax.checkpoint", reason="the current-JAX environment has no orbax; the pinned "
                        "environment runs this resume test")
    from rillet.pipelines.checkpointing import Checkpointer

    state = ngu.init(jax.random.PRNGKey(8), SPEC, SMALL)
    for k in range(3):
        state, _ = ngu.update(state, batch(10 + k), SMALL)
    ckpt = Checkpointer(str(tmp_path / "ckpt"), "ngu-test")
    ckpt.save(3, state, {"updates": 3})
    restored, _ = ckpt.restore(ngu.init(jax.random.PRNGKey(99), SPEC, SMALL))
    ckpt.close()
    for k in range(3, 6):
        state, _ = ngu.update(state, batch(10 + k), SMALL)
        restored, _ = ngu.update(restored, batch(10 + k), SMALL)
    a, b = jax.tree.leaves(eqx.filter(state, eqx.is_array)), jax.tree.leaves(eqx.filter(restored, eqx.is_array))
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert float(restored.rnd_stats.count) == 6 * SMALL.trace_length * 3


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="eval_policy_index"):
        ngu.NGUConfig(num_policies=4, eval_policy_index=4).validate()
    with pytest.raises(ConfigError, match="num_neighbours"):
        ngu.NGUConfig(num_neighbours=0).validate()
