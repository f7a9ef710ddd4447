"""Agent57's learner: the discount ladder at its segment boundaries, the split value (the combined head,
each network's loss reaching only its own network, the update training every group), and a resumed
learner continuing bit for bit."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError
from rillet.learners import agent57
from rillet.learners.networks.split_value import combine_values
from rillet.learners.policy_family import agent57_gammas, family_betas
from rillet.learners.returns import h, h_inv

SPEC = StepSpec(observation=ArraySpec((6,), "float32"), action=ArraySpec((), "int32"), num_actions=3)
SMALL = agent57.Agent57Config(burn_in=2, trace_length=5, lstm_size=8, hidden_sizes=(8,), novelty_hidden_sizes=(8,),
                              embedding_size=4, rnd_output_size=4, num_policies=10, learning_rate=1e-3,
                              target_update_period=3, memory_capacity=16)


def batch(seed=0, B=3):
    """A random sequence batch of every field Agent57's spec records (no episode boundaries)."""
    rng = np.random.default_rng(seed)
    spec, L = agent57.spec_extras(SPEC, SMALL), SMALL.sequence_length
    extras = {name: (rng.integers(0, 3 if name == "prev_action" else SMALL.num_policies, (B, L)).astype(np.int32)
                     if np.issubdtype(a.np_dtype, np.integer) else rng.uniform(0, 1, (B, L, *a.shape)).astype(np.float32))
              for name, a in spec.extras.items()}
    extras["policy_index"] = np.repeat(extras["policy_index"][:, :1], L, 1)
    false = np.zeros((B, L), bool)
    return {"observation": rng.normal(size=(B, L, 6)).astype(np.float32),
            "action": rng.integers(0, 3, (B, L)).astype(np.int32), "reward": rng.normal(size=(B, L)).astype(np.float32),
            "discount": np.ones((B, L), np.float32), "is_first": false, "is_last": false, "is_terminal": false,
            "mask": ~false, "extras": extras}


def _gamma(j, n, g0=0.9999, g1=0.997, g2=0.99):
    if j == 0:
        return g0
    if j <= 6:
        return g1 + (g0 - g1) / (1 + math.exp(-10 * (2 * j - 6) / 6))
    if j == 7:
        return g1
    return 1 - math.exp(((n - 1 - j) * math.log(1 - g1) + (j - 8) * math.log(1 - g2)) / (n - 9))


@pytest.mark.parametrize("n", [10, 32])
def test_discount_ladder_at_its_segment_boundaries(n):
    gammas = agent57_gammas(n)
    for j in (0, 1, 6, 7, 8, n - 1):
        assert gammas[j] == pytest.approx(_gamma(j, n), rel=1e-7, abs=1e-7), j
    assert gammas[8] == pytest.approx(0.997) and gammas[-1] == pytest.approx(0.99)
    assert np.all(np.diff(gammas[8:]) < 0)  # the tail falls from gamma1 to gamma2
    with pytest.raises(ConfigError, match="N >= 10"):
        agent57_gammas(9)


def test_combined_head_is_the_rescaled_mix():
    state = agent57.init(jax.random.PRNGKey(0), agent57.spec_extras(SPEC, SMALL), SMALL)
    net, obs = state.online, jnp.ones((2, 6))
    inputs = {"prev_action": jnp.array([0, 1]), "prev_reward": jnp.zeros(2), "prev_intrinsic_reward": jnp.ones(2),
              "policy_index": jnp.array([0, 9])}
    _, heads, core = net.step(obs, inputs, jnp.ones(2, bool), net.initial_state(2))
    beta = family_betas(10, SMALL.beta)[np.array([0, 9])][:, None]
    np.testing.assert_allclose(heads["q"], h(h_inv(heads["q_e"]) + beta * h_inv(heads["q_i"])), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(heads["q"][0], heads["q_e"][0], rtol=1e-5, atol=1e-6)  # beta_0 = 0
    assert core[0].shape == (2, 16)
    np.testing.assert_allclose(combine_values(jnp.ones((1, 2)), 2 * jnp.ones((1, 2)), jnp.array([0.5]), False), 2.0)


def test_each_value_loss_reaches_only_its_own_network():
    state = agent57.init(jax.random.PRNGKey(1), agent57.spec_extras(SPEC, SMALL), SMALL)
    modules = agent57.SPLIT_VALUE.groups(state.online)
    params, static = eqx.partition(modules, eqx.is_inexact_array)

    def loss(p, name):
        return agent57._split_q_loss(eqx.combine(p, static), state.target, batch(2), SMALL)[1][name]

    grad = jax.jit(jax.grad(loss), static_argnums=1)  # one compile per loss, not op-by-op with a scan per call
    for own, other in (("loss_e", "q_i"), ("loss_i", "q_e")):
        grads = grad(params, own)
        assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads[other])), (own, other)
        mine = "q_e" if other == "q_i" else "q_i"
        assert any(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(grads[mine]))


def test_update_trains_every_group_and_reports_both_losses():
    state = agent57.init(jax.random.PRNGKey(2), agent57.spec_extras(SPEC, SMALL), SMALL)
    new, metrics = agent57.update(state, batch(3), SMALL)
    assert set(new.opt_state) == {"q_e", "q_i", "embedding", "rnd"}
    for part in ("extrinsic", "intrinsic"):
        before, after = (jax.tree.leaves(eqx.filter(getattr(s.online, part), eqx.is_array)) for s in (state, new))
        assert any(not np.array_equal(a, b) for a, b in zip(before, after)), part
    assert metrics["priorities"].shape == (3,) and np.all(np.isfinite(metrics["priorities"]))
    assert float(metrics["loss"]) == pytest.approx(float(metrics["loss_e"]) + float(metrics["loss_i"]), rel=1e-6)


def test_learner_resumes_bit_for_bit(tmp_path):
    pytest.importorskip("orbax.checkpoint", reason="the current-JAX environment has no orbax; the pinned "
                        "environment runs this resume test")
    from rillet.pipelines.checkpointing import Checkpointer

    spec = agent57.spec_extras(SPEC, SMALL)
    state = agent57.init(jax.random.PRNGKey(8), spec, SMALL)
    state, _ = agent57.update(state, batch(10), SMALL)
    ckpt = Checkpointer(str(tmp_path / "ckpt"), {"test": "agent57"})
    ckpt.save(1, state, {"updates": 1})
    restored, _ = ckpt.restore(agent57.init(jax.random.PRNGKey(99), spec, SMALL))
    ckpt.close()
    for k in range(2):
        state, _ = agent57.update(state, batch(11 + k), SMALL)
        restored, _ = agent57.update(restored, batch(11 + k), SMALL)
    a, b = jax.tree.leaves(eqx.filter(state, eqx.is_array)), jax.tree.leaves(eqx.filter(restored, eqx.is_array))
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="num_policies"):
        agent57.Agent57Config(num_policies=8).validate()
    with pytest.raises(ConfigError, match="gamma0"):
        agent57.Agent57Config(gamma0=1.0).validate()
