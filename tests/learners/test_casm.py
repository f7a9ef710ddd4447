"""CASM (RECODE's representation): the token layout and its attention mask, what each prediction can
see, the loss over valid hidden actions, training on a toy, embedding shapes and config errors."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError
from rillet.learners import casm as casm_lib
from rillet.learners.casm import (CASM, CASMConfig, casm_loss, given_slots, prediction_steps, token_attention_mask,
                                  trained_targets)

A = 3
VECTOR = StepSpec(ArraySpec((6,), "float32"), ArraySpec((), "int32"), num_actions=A, env_id="vector")
IMAGE = StepSpec(ArraySpec((2, 36, 36), "uint8"), ArraySpec((), "int32"), num_actions=4, env_id="image")
TINY = CASMConfig(embedding_size=8, d_model=16, num_heads=2, num_layers=2, mlp_ratio=2, context_length=4,
                  hidden_sizes=(16,))
sequence_logits, embed = eqx.filter_jit(casm_lib.sequence_logits), eqx.filter_jit(casm_lib.embed)
# Steps 0..7: a_t hidden (o_t given) where True, else o_t hidden (a_t given).
CHOICE = np.array([True, False, True, True, False, False, True, False])


@functools.lru_cache(maxsize=None)
def model(spec="vector", config=TINY, seed=0):
    """Built once per arguments (modules are immutable); TINY's transformer shapes for every spec, so
    that its initialisation compiles once."""
    return CASM({"vector": VECTOR, "image": IMAGE}[spec], jax.random.PRNGKey(seed), config)


def test_prediction_steps_and_given_slots_hand_computed():
    reader, trained = prediction_steps(jnp.asarray(CHOICE), context_length=4)
    # the first later step whose observation is given; none after step 6 (8 = none)
    np.testing.assert_array_equal(reader, [2, 2, 3, 6, 6, 6, 8, 8])
    # a_t hidden, a reader exists and is < 4 steps on: steps 0, 2, 3 (step 6 has no reader)
    np.testing.assert_array_equal(trained, [1, 0, 1, 1, 0, 0, 0, 0])
    assert not prediction_steps(jnp.asarray(CHOICE), context_length=3)[1][3]  # reader 6 is 3 steps on
    np.testing.assert_array_equal(given_slots(jnp.asarray(CHOICE)),
                                  [1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1])


def test_trained_targets_need_every_transition_up_to_the_reader_valid():
    choice = jnp.stack([jnp.asarray(CHOICE)] * 3)
    valid = np.ones((3, 7), bool)
    valid[1, 4] = False  # inside step 3's span 3..5: a_3 drops, a_0 and a_2 stay
    valid[2, 0] = False  # a_0's only transition
    np.testing.assert_array_equal(trained_targets(choice, jnp.asarray(valid), 4),
                                  [[1, 0, 1, 1, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0, 0, 0]])


def test_attention_mask_exact_for_two_steps_and_window_one_step():
    expected = np.array([[1, 0, 0, 0],
                         [1, 1, 0, 0],
                         [0, 1, 1, 0],
                         [0, 0, 1, 1]], bool)
    np.testing.assert_array_equal(token_attention_mask(2, 1), expected)


def test_no_future_and_no_prediction_reaches_its_action_through_any_number_of_layers():
    steps, context = len(CHOICE), 4
    mask = np.asarray(token_attention_mask(steps, context))
    i, j = np.indices(mask.shape)
    assert not mask[j > i].any()  # no slot attends to a later one
    assert mask[(j <= i) & (i - j < 2 * context)].all()
    reach = np.eye(2 * steps, dtype=bool)  # slots whose inputs reach slot i after L layers
    for _ in range(2 * steps):
        reach = reach | ((reach.astype(int) @ mask.astype(int)) > 0)
    given = np.asarray(given_slots(jnp.asarray(CHOICE)))
    # what each slot's input is: ("o", t) / ("a", t) where given, the mask token otherwise
    source = [(("o", s // 2) if s % 2 == 0 else ("a", s // 2)) if given[s] else "mask" for s in range(2 * steps)]
    reader, trained = map(np.asarray, prediction_steps(jnp.asarray(CHOICE), context))
    assert trained.sum() == 3
    for t in np.flatnonzero(trained):
        slot = 2 * reader[t]
        seen = {source[s] for s in np.flatnonzero(reach[slot])}
        assert ("a", t) not in seen  # a hidden action never reaches its own prediction
        assert ("o", t) in seen and ("o", reader[t]) in seen  # o_t and the later observation do
        assert not any(s[0] == "o" and s[1] > reader[t] for s in seen if s != "mask")  # nothing later
    for s in np.flatnonzero(~given):  # hidden inputs reach no slot at all: only the mask token is there
        assert source[s] == "mask"


def _window(seed=0, batch=2, steps=8):
    rng = np.random.default_rng(seed)
    obs = jnp.asarray(rng.normal(size=(batch, steps, 6)), jnp.float32)
    act = jnp.asarray(rng.integers(0, A, size=(batch, steps)), jnp.int32)
    return obs, act


def test_a_hidden_action_and_a_hidden_observation_change_no_logit():
    m, (obs, act) = model(), _window(batch=1)
    obs, act, choice = obs[0], act[0], jnp.asarray(CHOICE)
    base = np.asarray(sequence_logits(m, obs, act, choice))
    hidden_action = act.at[2].set((act[2] + 1) % A)  # a_2 is hidden, a target read at slot 6 (o_3)
    hidden_obs = obs.at[1].add(5.0)  # o_1 is hidden
    np.testing.assert_array_equal(np.asarray(sequence_logits(m, obs, hidden_action, choice)), base)
    np.testing.assert_array_equal(np.asarray(sequence_logits(m, hidden_obs, act, choice)), base)
    given_action = act.at[1].set((act[1] + 1) % A)  # a_1 is given: the check can fail
    changed = np.asarray(sequence_logits(m, obs, given_action, choice))
    np.testing.assert_array_equal(changed[:3], base[:3])
    assert not np.allclose(changed[4], base[4])  # a_0's reader, o_2, sees a_1


def test_a_future_observation_changes_no_earlier_slot():
    m, (obs, act) = model(), _window(batch=1)
    choice = jnp.asarray(CHOICE)
    base = np.asarray(sequence_logits(m, obs[0], act[0], choice))
    later = np.asarray(sequence_logits(m, obs[0].at[3].add(3.0), act[0], choice))  # o_3 is given: slot 6
    np.testing.assert_array_equal(later[:6], base[:6])
    assert not np.allclose(later[6:], base[6:])


@eqx.filter_jit
def _train_step(m, opt_state, obs, act, valid, key, choice):
    def loss_fn(mm):
        return casm_loss({"embedding": mm}, obs, act, valid, key, choice)

    (loss, aux), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(m)
    updates, opt_state = OPTIMIZER.update(grads, opt_state, eqx.filter(m, eqx.is_array))
    return eqx.apply_updates(m, updates), opt_state, loss, aux


OPTIMIZER = optax.adam(3e-3)
BATCH = 16  # one shape for every training test: one compilation


def test_loss_falls_on_a_fixed_batch_with_padding():
    m, (obs, act) = model(), _window(seed=1, batch=BATCH)
    valid = jnp.ones((BATCH, 7), bool).at[3, 4:].set(False)  # one sequence is padded from step 5
    choice = jnp.asarray(np.random.default_rng(2).random((BATCH, 8)) < 0.6)
    opt_state = OPTIMIZER.init(eqx.filter(m, eqx.is_array))
    losses = []
    for _ in range(40):
        m, opt_state, loss, aux = _train_step(m, opt_state, obs, act, valid, jax.random.PRNGKey(0), choice)
        losses.append(float(loss))
    assert int(aux["targets"]) > 20 and np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0]


def _toy(seed, batch, steps=8):
    """o_{t+1} = o_t + 2·onehot(a_t) (padded to 6 dims): a_t = argmax(o_{t+1} - o_t)."""
    rng = np.random.default_rng(seed)
    act = rng.integers(0, A, size=(batch, steps))
    obs = np.zeros((batch, steps, 6), np.float32)
    obs[:, 0] = rng.normal(size=(batch, 6))
    for t in range(steps - 1):
        obs[:, t + 1] = obs[:, t] + 2.0 * np.eye(6, dtype=np.float32)[act[:, t]]
    return jnp.asarray(obs), jnp.asarray(act, jnp.int32)


def test_accuracy_rises_above_chance_on_an_inverse_dynamics_toy():
    m, (obs, act) = model(), _toy(0, BATCH)
    valid = jnp.ones((BATCH, 7), bool)
    opt_state = OPTIMIZER.init(eqx.filter(m, eqx.is_array))
    choice = lambda k: jax.random.bernoulli(k, 0.5, (BATCH, 8))  # noqa: E731
    key = jax.random.PRNGKey(10_000)  # held-out windows: the step's aux is measured before its update
    _, _, _, before = _train_step(m, opt_state, *_toy(1, BATCH), valid, key, choice(key))
    for step in range(150):
        key = jax.random.PRNGKey(step)
        m, opt_state, _, _ = _train_step(m, opt_state, obs, act, valid, key, choice(key))
    key = jax.random.PRNGKey(10_000)
    _, _, _, after = _train_step(m, opt_state, *_toy(1, BATCH), valid, key, choice(key))
    assert int(after["targets"]) > 10
    assert float(after["accuracy"]) > 0.6 > float(before["accuracy"])  # chance is 1/3


def test_embed_shapes_for_vectors_and_images():
    e = embed(model(), jnp.zeros((2, 5, 6)))
    assert e.shape == (2, 5, 8) and e.dtype == jnp.float32
    frames = jnp.zeros((1, 3, 2, 36, 36), jnp.uint8)
    assert embed(model("image"), frames).shape == (1, 3, 8) and embed(model("image"), frames[0, 0]).shape == (8,)


@pytest.mark.parametrize("field, value", [("embedding_size", 0), ("num_heads", 3), ("num_layers", 0),
                                          ("context_length", 1), ("mask_probability", 0.0),
                                          ("mask_probability", 1.5), ("torso", "resnet"), ("hidden_sizes", ())])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"CASMConfig.{field if field != 'num_heads' else 'd_model'}"):
        CASMConfig(**{field: value}).validate()


def test_spec_errors_and_a_misshaped_valid_are_refused():
    continuous = StepSpec(ArraySpec((6,), "float32"), ArraySpec((2,), "float32"), num_actions=None)
    with pytest.raises(ConfigError, match="discrete actions"):
        CASM(continuous, jax.random.PRNGKey(0), TINY)
    with pytest.raises(ConfigError, match="torso"):
        CASM(VECTOR, jax.random.PRNGKey(0), CASMConfig(torso="nature_dqn"))
    obs, act = _window()
    with pytest.raises(ValueError, match="S-1"):
        casm_loss({"embedding": model()}, obs, act, jnp.ones((2, 8), bool), jax.random.PRNGKey(0))
