"""Perceiver actor-critic network: preset sizes, shapes, padding masks, decoder independence, dtype."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.errors import ConfigError
from rillet.learners.networks import perceiver as P

OBS_SIZES, ACT_SIZES = (5, 3), (3, 2)  # two tasks: obs_max 5, D_max 3
K, C = 5, 11


def tiny(config=P.PRESETS["test"], key=0):
    return P.PerceiverActorCritic(config, OBS_SIZES, ACT_SIZES, K, C, jax.random.PRNGKey(key))


# The network's methods, each under one jit shared by the tests: one compile per input shape and dtype
# rather than op-by-op dispatch (slow on current JAX).
encode = eqx.filter_jit(lambda model, obs, task, image=None: model.encode(obs, task, image))
policy_logits = eqx.filter_jit(lambda model, lat: model.policy_logits(lat))
critic_logits = eqx.filter_jit(lambda model, lat, actions, act_mask: model.critic_logits(lat, actions, act_mask))


def inputs(batch=4, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(batch, 5)).astype(np.float32)
    task = np.array([0, 1] * (batch // 2), np.int32)
    actions = rng.uniform(-1, 1, (batch, 6, 3)).astype(np.float32)
    return obs, task, actions


@pytest.mark.parametrize("name", ["xs", "s", "m", "l"])
def test_presets_land_near_nominal_parameter_counts(name):
    build = lambda k: P.PerceiverActorCritic(P.PRESETS[name], (64, 32), (16, 8), 21, 101, k)  # noqa: E731
    model = jax.eval_shape(build, jax.random.PRNGKey(0))  # abstract: the 1B model needs no memory
    n = P.count_params(model)
    assert 0.75 * P.NOMINAL_PARAMS[name] <= n <= 1.35 * P.NOMINAL_PARAMS[name], (name, n)


def test_count_params_matches_concrete_and_abstract_models():
    model = tiny()
    abstract = jax.eval_shape(lambda k: tiny(key=0), jax.random.PRNGKey(0))
    manual = sum(x.size for x in jax.tree.leaves(model) if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating))
    assert P.count_params(model) == P.count_params(abstract) == manual > 0


def test_output_shapes_and_dtypes():
    model = tiny()
    obs, task, actions = inputs()
    lat = encode(model, obs, task)
    assert lat.shape == (4, P.PRESETS["test"].num_latents, P.PRESETS["test"].d_model)
    assert policy_logits(model, lat).shape == (4, 3, K)
    _, act_mask = model.masks(task)
    np.testing.assert_array_equal(act_mask, [[1, 1, 1], [1, 1, 0]] * 2)
    q = critic_logits(model, lat, actions, act_mask)
    assert q.shape == (4, 6, C) and q.dtype == jnp.float32 and np.all(np.isfinite(q))


def test_padded_observation_and_action_dims_do_not_change_outputs():
    model = tiny()
    obs, task, actions = inputs()
    obs_mask, act_mask = model.masks(task)
    rng = np.random.default_rng(1)
    obs2 = np.where(obs_mask, obs, rng.normal(size=obs.shape) * 100).astype(np.float32)
    actions2 = np.where(act_mask[:, None], actions, rng.uniform(-1, 1, actions.shape)).astype(np.float32)
    assert not np.allclose(obs, obs2) and not np.allclose(actions, actions2)
    lat, lat2 = encode(model, obs, task), encode(model, obs2, task)
    np.testing.assert_array_equal(lat, lat2)
    np.testing.assert_array_equal(critic_logits(model, lat, actions, act_mask),
                                  critic_logits(model, lat2, actions2, act_mask))
    # ... while real dims and the task id do matter.
    assert not np.allclose(lat, encode(model, obs + 1.0, task))
    assert not np.allclose(lat, encode(model, obs, 1 - task))


def test_candidate_actions_are_scored_independently():
    model = tiny()
    obs, task, actions = inputs()
    lat = encode(model, obs, task)
    _, act_mask = model.masks(task)
    all_q = critic_logits(model, lat, actions, act_mask)
    for j in range(actions.shape[1]):
        one = critic_logits(model, lat, actions[:, j : j + 1], act_mask)[:, 0]
        np.testing.assert_allclose(all_q[:, j], one, atol=1e-5)


def test_image_encoder_tokens_and_bf16_cast():
    cfg = dataclasses.replace(P.PRESETS["test"], image_shape=(3, 9, 7))
    model = tiny(cfg)
    assert model.image.pos.shape[0] == 3 * 2  # ceil(ceil(9/2)/2) * ceil(ceil(7/2)/2)
    obs, task, _ = inputs()
    image = np.random.default_rng(0).integers(0, 256, (4, 3, 9, 7), dtype=np.uint8)
    lat = encode(model, obs, task, image)
    assert lat.shape[0] == 4 and np.all(np.isfinite(lat))
    with pytest.raises(ValueError, match="image"):
        model.encode(obs, task)
    half = P.cast_floating(model, jnp.bfloat16)
    lat16 = encode(half, obs, task, image)
    assert lat16.dtype == jnp.bfloat16 and policy_logits(half, lat16).dtype == jnp.float32
    np.testing.assert_allclose(lat16.astype(np.float32), lat, atol=0.1)


def test_config_validation():
    with pytest.raises(ConfigError, match="divisible"):
        P.get_config(P.PerceiverConfig(d_model=30, num_heads=4))
    with pytest.raises(ConfigError, match="Unknown"):
        P.get_config("xxl")
    with pytest.raises(ConfigError, match="num_latents"):
        P.PerceiverConfig(num_latents=0).validate()
    with pytest.raises(ConfigError, match="task"):
        P.PerceiverActorCritic(P.PRESETS["test"], (3, 4), (2,), K, C, jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match="attention"):
        P.PerceiverActorCritic(P.PRESETS["test"], OBS_SIZES, ACT_SIZES, K, C, jax.random.PRNGKey(0), attention="flash")


def test_attention_block_is_softmax_attention_with_float32_softmax():
    """Hand-written reference: per head softmax(q k^T / sqrt(dh)) v, then the output projection and MLP."""
    d, h, nq, nk = 8, 2, 3, 5
    block = P.AttentionBlock(d, h, 2, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    x, ctx = (jnp.asarray(rng.normal(size=(2, n, d)).astype(np.float32)) for n in (nq, nk))
    q = block.q(block.ln_q(x)).reshape(2, nq, h, d // h)
    k, v = (t.reshape(2, nk, h, d // h) for t in jnp.split(block.kv(block.ln_kv(ctx)), 2, axis=-1))
    w = jax.nn.softmax(np.einsum("bqhc,bkhc->bhqk", q, k) / np.sqrt(d // h), axis=-1)
    att = np.einsum("bhqk,bkhc->bqhc", w, v).reshape(2, nq, d)
    y = x + block.out(att)
    y = y + block.mlp_out(jax.nn.gelu(block.mlp_in(block.ln_mlp(y))))
    np.testing.assert_allclose(block(x, ctx), y, rtol=1e-5, atol=1e-5)
    # extra leading dims (the critic's [B, M, ...] queries) are flattened and restored
    x3 = jnp.stack([x, x + 1.0])  # [2, 2, nq, d]
    np.testing.assert_allclose(block(x3, jnp.stack([ctx, ctx]))[0], block(x, ctx), rtol=1e-6, atol=1e-6)
