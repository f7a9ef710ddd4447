"""The decoder-only transformer: shapes, causality, the sliding-window mask, positions, bf16 compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.errors import ConfigError
from rillet.learners.networks.attention import cast_floating
from rillet.learners.networks.transformer import (DecoderTransformer, TransformerConfig, attention_mask,
                                                   rotary, sinusoidal_positions)

SMALL = dict(vocab_size=5, d_model=16, num_heads=2, num_layers=2, num_outputs=3)


def model(**kw):
    return DecoderTransformer(TransformerConfig(**{**SMALL, **kw}), jax.random.PRNGKey(0))


@pytest.mark.parametrize("positions", ["rotary", "sinusoidal", "none"])
def test_shapes_and_tokens_equal_their_embeddings(positions):
    m = model(positions=positions)
    tokens = jnp.array([1, 2, 3, 4, 0, 1], jnp.int32)
    out = m(tokens)
    assert out.hidden.shape == (2, 6, 16) and out.output.shape == (6, 3) and out.output.dtype == jnp.float32
    again = m(m.embed(tokens))
    np.testing.assert_array_equal(np.asarray(out.hidden), np.asarray(again.hidden))


@pytest.mark.parametrize("window", [0, 2])
def test_causal_future_tokens_change_nothing_before_them(window):
    m = model(window=window)
    a, b = jnp.array([1, 2, 3, 4, 0]), jnp.array([1, 2, 3, 0, 4])
    ha, hb = m(a).hidden, m(b).hidden
    np.testing.assert_array_equal(np.asarray(ha[:, :3]), np.asarray(hb[:, :3]))
    assert not np.allclose(np.asarray(ha[:, 3:]), np.asarray(hb[:, 3:]))


def test_sliding_window_mask_exact_positions():
    expected = np.array([[1, 0, 0, 0, 0],
                         [1, 1, 0, 0, 0],
                         [0, 1, 1, 0, 0],
                         [0, 0, 1, 1, 0],
                         [0, 0, 0, 1, 1]], bool)
    np.testing.assert_array_equal(np.asarray(attention_mask(5, 2)), expected)
    np.testing.assert_array_equal(np.asarray(attention_mask(4)), np.tril(np.ones((4, 4), bool)))


def test_one_layer_window_one_sees_only_its_own_token():
    m = model(num_layers=1, window=1, positions="none")
    h = m(jnp.array([3, 1, 3, 2, 3])).hidden[0]
    np.testing.assert_allclose(np.asarray(h[0]), np.asarray(h[2]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(h[0]), np.asarray(h[4]), rtol=1e-6)


def test_rotary_preserves_norms_and_makes_scores_relative():
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 1, 8))
    r = rotary(x)
    np.testing.assert_allclose(np.linalg.norm(r, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)
    q = jnp.broadcast_to(x[0], x.shape)  # the same vector at every position
    rq = rotary(q)[:, 0]
    scores = np.asarray(rq @ rq.T)
    np.testing.assert_allclose(scores[0, 2], scores[3, 5], rtol=1e-4)  # depends on i - j only
    np.testing.assert_allclose(np.asarray(sinusoidal_positions(3, 4))[1], [np.sin(1), np.cos(1), np.sin(1e-2),
                                                                           np.cos(1e-2)], rtol=1e-5)


def _dot_dtypes(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    found = []

    def walk(jp):
        for eqn in jp.eqns:
            if eqn.primitive.name == "dot_general":
                found.append(str(eqn.invars[0].aval.dtype))
            for sub in jax.core.jaxprs_in_params(eqn.params) if hasattr(jax.core, "jaxprs_in_params") else []:
                walk(sub)
            for v in eqn.params.values():
                inner = getattr(v, "jaxpr", None)
                if inner is not None and hasattr(inner, "eqns"):
                    walk(inner)
                elif hasattr(v, "eqns"):
                    walk(v)
    walk(jaxpr.jaxpr)
    return found


def test_bf16_computes_in_bf16_and_fp32_does_not():
    tokens = jnp.array([1, 2, 3, 4])
    bf = model(dtype="bfloat16")
    assert bf(tokens).hidden.dtype == jnp.bfloat16
    bf_dots = _dot_dtypes(bf, tokens)
    assert bf_dots and set(bf_dots) == {"bfloat16"}, bf_dots
    fp = model()
    fp_dots = _dot_dtypes(fp, tokens)
    assert fp(tokens).hidden.dtype == jnp.float32 and fp_dots and set(fp_dots) == {"float32"}, fp_dots
    cast = cast_floating(fp, jnp.bfloat16)
    assert cast(tokens).hidden.dtype == jnp.bfloat16


@pytest.mark.parametrize("bad", [dict(positions="alibi"), dict(d_model=15), dict(window=-1), dict(dtype="fp8"),
                                 dict(num_layers=0)])
def test_bad_config_is_refused(bad):
    with pytest.raises(ConfigError):
        model(**bad)
