"""MEME's parts: the trust-region mask on hand-made values, TD normalisation across scales and its floor,
the distillation head (its loss falls; acting from it is a distribution), and MEME's update (Agent57's
learner with every part on) reporting them; R2D2 takes the same parts from its config."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_agent57 import SMALL as AGENT57_SMALL
from test_agent57 import SPEC, batch

from rillet.actors.policies import behaviour_distribution, recurrent_actor_state, recurrent_epsilon_greedy
from rillet.errors import ConfigError
from rillet.learners import agent57, r2d2, sequence_targets, td_regularisers
from rillet.learners.distillation import acting_head, distillation_loss, greedy_churn
from rillet.learners.meme import MEMEConfig
from rillet.learners.running_stats import init_stats, update_stats

SMALL = MEMEConfig(**{f.name: getattr(AGENT57_SMALL, f.name) for f in dataclasses.fields(AGENT57_SMALL)
                      if f.name in ("burn_in", "trace_length", "lstm_size", "hidden_sizes", "novelty_hidden_sizes",
                                    "embedding_size", "rnd_output_size", "num_policies", "learning_rate",
                                    "target_update_period", "memory_capacity")}, torso="mlp", measure_churn=True)


def test_trust_region_mask_inside_and_outside_in_each_direction():
    q_target = jnp.zeros(6)
    q_online = jnp.array([0.5, 2.0, 2.0, -2.0, -2.0, 2.0])
    td = jnp.array([1.0, 1.0, -1.0, -1.0, 1.0, 0.0])
    keep = td_regularisers.trust_region_mask(q_online, q_target, td, radius=jnp.asarray(1.0))
    # inside: kept; above and moving up: dropped; above, moving back: kept; below, moving down: dropped;
    # below, moving back: kept; a zero TD error is never dropped
    np.testing.assert_array_equal(keep, [True, False, True, False, True, True])


def test_normalised_losses_have_the_same_scale_across_error_scales():
    rng = np.random.default_rng(0)
    errors = rng.normal(size=(4, 20)).astype(np.float32)
    valid = jnp.ones((4, 20), bool)
    cfg = MEMEConfig(trust_region=False)
    losses = []
    for scale in (1.0, 1000.0):
        td = jnp.asarray(errors * scale)
        used, keep, sigma = td_regularisers.regularised_td(td, valid, td, td, init_stats(), cfg)
        losses.append(float(sequence_targets.td_loss(used, keep)))
        assert float(sigma) == pytest.approx(scale * float(np.std(errors)), rel=1e-4)
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert 0.3 < losses[0] < 0.7  # 0.5 * E[(td / std)^2] = 0.5
    raw = float(sequence_targets.td_loss(jnp.asarray(errors * 1000.0), valid))
    assert raw / losses[0] > 1e5  # what the normalisation removes


def test_normalisation_floor_and_running_std():
    tiny = jnp.full((2, 5), 1e-4).at[0, 0].set(-1e-4)
    valid = jnp.ones((2, 5), bool)
    assert float(td_regularisers.td_scale(init_stats(), tiny, valid, 0.01)) == pytest.approx(0.01)
    stats = update_stats(init_stats(), jnp.array([-3.0, 3.0]), jnp.array([True, True]))
    assert float(td_regularisers.td_scale(stats, tiny, valid, 0.01)) == pytest.approx(3.0)  # running std wins
    windowed = update_stats(stats, jnp.zeros(1000), jnp.ones(1000, bool), max_count=10)
    assert float(windowed.var) < 0.1 < float(update_stats(stats, jnp.zeros(10), jnp.ones(10, bool)).var)


def test_distillation_loss_falls_on_a_fixed_batch():
    rng = np.random.default_rng(1)
    q = jnp.asarray(rng.normal(size=(3, 6, 4)), jnp.float32)
    valid = jnp.ones((3, 6), bool)
    logits = jnp.zeros((3, 6, 4))
    opt = optax.adam(0.1)
    opt_state = opt.init(logits)
    first, _ = distillation_loss(logits, q, valid)
    for _ in range(30):
        grads = jax.grad(lambda x: distillation_loss(x, q, valid)[0])(logits)
        updates, opt_state = opt.update(grads, opt_state)
        logits = optax.apply_updates(logits, updates)
    last, agreement = distillation_loss(logits, q, valid)
    assert float(first) == pytest.approx(np.log(4.0), rel=1e-5) and float(last) < 0.3 * float(first)
    assert float(agreement) == 1.0


def test_acting_from_the_distillation_head_is_a_distribution():
    logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    for sample in (True, False):
        mu = behaviour_distribution(logits, jnp.array([0.1, 0.5]), sample)
        np.testing.assert_allclose(jnp.sum(mu, axis=-1), 1.0, rtol=1e-6)
        assert bool(jnp.all(mu > 0))
    assert acting_head(SMALL) == ("pi", False) and acting_head(agent57.Agent57Config()) == ("q", False)
    assert acting_head(dataclasses.replace(SMALL, distillation_acting="sample")) == ("pi", True)
    state = agent57.init(jax.random.PRNGKey(0), agent57.spec_extras(SPEC, SMALL), SMALL)
    policy, b = recurrent_epsilon_greedy("pi", sample=True), 64
    actor = {**recurrent_actor_state(np.full(b, 0.2, np.float32), 2 * SMALL.lstm_size),
             "policy_index": jnp.zeros(b, jnp.int32), "prev_intrinsic_reward": jnp.zeros(b)}
    obs = jnp.asarray(np.random.default_rng(2).normal(size=(b, 6)), jnp.float32)
    action, extras, _ = policy(state.online, obs, actor, jax.random.PRNGKey(3))
    _, heads, _ = state.online.step(obs, {i.name: actor[i.name] for i in state.online.inputs}, actor["is_first"],
                                    actor["core"])
    mu = behaviour_distribution(heads["pi"], actor["epsilon"], True)
    np.testing.assert_allclose(extras["behaviour_prob"], mu[jnp.arange(b), action], rtol=1e-5)


def test_greedy_churn_counts_changed_argmax_on_valid_states():
    before = jnp.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    after = jnp.array([[[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]])
    assert float(greedy_churn(before, after, jnp.array([[True, True, False]]))) == pytest.approx(0.5)


def test_meme_update_reports_every_part_and_keeps_td_statistics():
    spec = agent57.spec_extras(SPEC, SMALL)
    state = agent57.init(jax.random.PRNGKey(4), spec, SMALL)
    assert set(state.td_stats) == {"q_e", "q_i"} and "pi" in state.online.extrinsic.heads
    new, metrics = agent57.update(state, batch(5), SMALL)
    for name in ("distillation_loss", "distillation_agreement", "trust_region_kept", "td_scale_q_e", "td_scale_q_i",
                 "q_churn", "policy_churn"):
        assert np.isfinite(float(metrics[name])), name
    assert 0.0 <= float(metrics["trust_region_kept"]) <= 1.0
    assert all(float(new.td_stats[k].count) > 0 for k in ("q_e", "q_i"))
    assert np.all(np.isfinite(metrics["priorities"]))
    before = jax.tree.leaves(eqx.filter(state.online.extrinsic.heads["pi"], eqx.is_array))
    after = jax.tree.leaves(eqx.filter(new.online.extrinsic.heads["pi"], eqx.is_array))
    assert any(not np.array_equal(x, y) for x, y in zip(before, after))


def test_r2d2_switches_the_same_parts_on_from_its_config():
    from test_r2d2 import CFG, make_batch
    from test_r2d2 import SPEC as R2D2_SPEC

    cfg = dataclasses.replace(CFG, trust_region=True, normalise_td=True, distillation=True, estimator="soft_watkins")
    state = r2d2.init(jax.random.PRNGKey(0), r2d2.spec_extras(R2D2_SPEC, cfg), cfg)
    new, metrics = r2d2.update(state, make_batch(), cfg)
    assert "pi" in state.online.heads and float(new.td_stats["q"].count) > 0
    assert {"distillation_loss", "trust_region_kept", "td_scale_q"} <= set(metrics)
    with pytest.raises(ConfigError, match="distillation_acting"):
        dataclasses.replace(cfg, distillation_acting="greedy").validate()


def test_dqn_takes_the_nfnet_torso_from_its_config():
    from rillet.datasets.specs import ArraySpec as Spec
    from rillet.datasets.specs import StepSpec as Steps
    from rillet.learners import dqn
    from rillet.learners.networks.nfnet import NFNetTorso

    spec = Steps(Spec((4,), "float32"), Spec((), "int32"), num_actions=2)
    state = dqn.init(jax.random.PRNGKey(0), spec, dqn.DQNConfig(torso="nfnet", hidden_sizes=(16,)))
    assert isinstance(state.online.torso, NFNetTorso)
    assert state.online(jnp.ones((3, 4))).shape == (3, 2)
    with pytest.raises(ConfigError, match="torso"):
        dqn.DQNConfig(torso="resnet").validate()
