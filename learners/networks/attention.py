"""Attention building blocks shared by the sequence networks (PAC's Perceiver, the decoder-only
transformer): a dense layer, a float32-statistics LayerNorm and a pre-LayerNorm attention block.

Compute dtype follows the parameters: `cast_floating(module, jnp.bfloat16)` gives bf16 matmuls
(LayerNorm statistics stay in float32).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = ["Dense", "LayerNorm", "AttentionBlock", "cast_floating"]


def cast_floating(model: Any, dtype) -> Any:
    """Casts every floating array leaf to `dtype` (differentiable: gradients flow to the originals)."""
    return jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, model)


class Dense(eqx.Module):
    """x [..., in] -> [..., out]; weight ~ N(0, scale^2 / in)."""

    weight: jax.Array
    bias: jax.Array

    def __init__(self, in_size: int, out_size: int, key: jax.Array, scale: float = 1.0):
        self.weight = jax.random.normal(key, (in_size, out_size), jnp.float32) * (scale / math.sqrt(in_size))
        self.bias = jnp.zeros((out_size,), jnp.float32)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.weight + self.bias


class LayerNorm(eqx.Module):
    """Normalises the last axis in float32; returns the input dtype."""

    scale: jax.Array
    bias: jax.Array

    def __init__(self, size: int):
        self.scale, self.bias = jnp.ones((size,), jnp.float32), jnp.zeros((size,), jnp.float32)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, -1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), -1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + 1e-6)
        return (y * self.scale.astype(jnp.float32) + self.bias.astype(jnp.float32)).astype(x.dtype)


class AttentionBlock(eqx.Module):
    """Pre-LN block: x += MHA(LN(x), LN(context)); x += MLP(LN(x)). Self-attention if context is None.

    x [B, Nq, d], context [B, Nk, d] -> [B, Nq, d] (any number of leading axes, or none).
    mask: optional bool [Nq, Nk], True where query i may attend to key j (causal, sliding window).
    qk_transform: optional map of queries and keys [..., N, heads, d_head] before the dot product
    (rotary positions). With neither, the block computes exactly what PAC's Perceiver always did.
    """

    ln_q: LayerNorm
    ln_kv: LayerNorm
    q: Dense
    kv: Dense
    out: Dense
    ln_mlp: LayerNorm
    mlp_in: Dense
    mlp_out: Dense
    num_heads: int = eqx.field(static=True)
    attention: str | None = eqx.field(static=True)

    def __init__(self, d: int, num_heads: int, mlp_ratio: int, key: jax.Array, attention: str | None = None):
        kq, kkv, ko, k1, k2 = jax.random.split(key, 5)
        self.ln_q, self.ln_kv, self.ln_mlp = LayerNorm(d), LayerNorm(d), LayerNorm(d)
        self.q, self.kv, self.out = Dense(d, d, kq), Dense(d, 2 * d, kkv), Dense(d, d, ko)
        self.mlp_in, self.mlp_out = Dense(d, mlp_ratio * d, k1), Dense(mlp_ratio * d, d, k2)
        self.num_heads, self.attention = num_heads, attention

    def __call__(self, x: jax.Array, context: jax.Array | None = None, mask: jax.Array | None = None,
                 qk_transform: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
        xq = self.ln_q(x)
        ctx = xq if context is None else self.ln_kv(context)
        *lead, nq, d = x.shape
        h, dh = self.num_heads, d // self.num_heads
        q = self.q(xq).reshape(*lead, nq, h, dh)
        k, v = jnp.split(self.kv(ctx), 2, axis=-1)
        k, v = (t.reshape(*t.shape[:-1], h, dh) for t in (k, v))
        if qk_transform is not None:
            q, k = qk_transform(q), qk_transform(k)
        flat = lambda t: t.reshape(-1, *t.shape[-3:])  # noqa: E731  ([*lead, n, h, dh] -> [B', n, h, dh])
        impl = self.attention if context is None else None
        extra = {} if mask is None else {"mask": jnp.asarray(mask, bool)[None, None]}
        att = jax.nn.dot_product_attention(flat(q), flat(k), flat(v), implementation=impl, **extra)
        att = att.reshape(*lead, nq, d)
        x = x + self.out(att)
        return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.ln_mlp(x))))
