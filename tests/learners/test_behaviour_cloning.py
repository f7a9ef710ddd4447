"""Behaviour cloning on a value agent's network: the loss by hand, the steps a sequence counts, and
the DQN network learning a labelling of its observations."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet.learners import behaviour_cloning as bc
from rillet.learners import dqn, r2d2
from tests.learners.test_dqn import CARTPOLE
from tests.learners.test_r2d2 import CFG, SPEC, make_batch


def test_cloning_loss_by_hand():
    logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]])
    actions = jnp.array([0, 0, 1])
    valid = jnp.array([True, True, False])
    loss, aux = bc.cloning_loss(logits, actions, valid)
    expected = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(1.0))])  # -log softmax of the taken action
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    assert float(aux["accuracy"]) == 0.5 and int(aux["valid_steps"]) == 2


def test_sequence_steps_skip_the_burn_in_padding_and_episode_ends():
    batch = make_batch(ends=(None, 7, 4, 1))
    network = r2d2.init(jax.random.PRNGKey(0), r2d2.spec_extras(SPEC, CFG), CFG).online
    logits, actions, valid = eqx.filter_jit(bc.sequence_logits)(network, batch, CFG)
    T = CFG.sequence_length - CFG.burn_in
    assert logits.shape == (4, T, SPEC.num_actions) and actions.shape == valid.shape == (4, T)
    for b, end in enumerate((None, 7, 4, 1)):  # real steps after the burn-in (3), not the last one
        expected = [end is None or CFG.burn_in + t < end for t in range(T)]
        assert valid[b].tolist() == expected, b
    np.testing.assert_array_equal(actions, batch["action"][:, CFG.burn_in:])


def test_dqn_network_learns_a_labelling_by_cloning():
    config = dataclasses.replace(dqn.DQNConfig(hidden_sizes=(32,)), learning_rate=1e-2)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(64, 4)).astype(np.float32)
    batch = {"observation": obs, "action": (obs[:, 0] > 0).astype(np.int32)}  # the behaviour's rule
    state = dqn.init(jax.random.PRNGKey(0), CARTPOLE, config)
    first = None
    for _ in range(60):
        state, metrics = bc.update(state, batch, config, bc.transition_logits)
        first = first if first is not None else float(metrics["loss"])
    assert float(metrics["loss"]) < 0.3 * first and float(metrics["accuracy"]) > 0.95
    greedy = np.argmax(np.asarray(dqn.q_values(state.online, obs)), axis=-1)
    assert np.mean(greedy == batch["action"]) > 0.95  # the greedy policy of the trained head clones it
