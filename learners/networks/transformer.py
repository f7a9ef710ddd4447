"""A small decoder-only transformer: causal (optionally sliding-window) self-attention, pre-LayerNorm
blocks shared with PAC's Perceiver (learners/networks/attention.py), sinusoidal, rotary or no positions.

The call signature, which the sequence-model probes (rillet.evals.probes) accept from any module:

    model.embed(tokens [T] int)            -> embeddings [T, d]
    model(tokens [T] int)                  -> SequenceOutput(hidden [L, T, d], output [T, K])
    model(embeddings [T, d] float)         -> the same, from given input embeddings (before positions)
    model(tokens, positions=[T] int, mask=[T, T] bool)  -> the same with explicit position ids and the keys
                                           each query sees (several sequences sharing prefixes as one
                                           prefix tree in one row; `tree_attention = True` says so)

hidden[l] is the residual stream after block l (hidden[-1] the final layer, before the final
LayerNorm); output holds float32 logits. One sequence per call: `jax.vmap` for batches. The compute
dtype follows the parameters (`dtype="bfloat16"` in the config, or `cast_floating(model, jnp.bfloat16)`);
LayerNorm statistics stay in float32.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from rillet.errors import ConfigError
from rillet.learners.networks.attention import AttentionBlock, Dense, LayerNorm, cast_floating

__all__ = ["TransformerConfig", "DecoderTransformer", "SequenceOutput", "attention_mask", "sinusoidal_positions",
           "rotary", "POSITIONS", "DTYPES"]

POSITIONS = ("rotary", "sinusoidal", "none")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class SequenceOutput(NamedTuple):
    """hidden [L, T, d]: every block's output; output [T, K]: float32 logits."""

    hidden: jax.Array
    output: jax.Array


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Sizes and options. window=0: full causal attention; window=w: token i attends to i-w+1..i."""

    vocab_size: int = 16
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    mlp_ratio: int = 4
    num_outputs: int = 16  # size of the output head (next-token logits, or a task's classes)
    positions: str = "rotary"  # one of POSITIONS
    window: int = 0
    dtype: str = "float32"  # compute dtype: "float32" or "bfloat16"
    rope_base: float = 10_000.0

    def validate(self) -> "TransformerConfig":
        for name in ("vocab_size", "d_model", "num_heads", "num_layers", "mlp_ratio", "num_outputs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"TransformerConfig.{name}={v!r} is invalid: it must be an integer >= 1.")
        if self.d_model % self.num_heads or (self.d_model // self.num_heads) % 2:
            raise ConfigError(f"TransformerConfig.d_model={self.d_model} must be num_heads={self.num_heads} "
                              "times an even head size.")
        if self.positions not in POSITIONS:
            raise ConfigError(f"TransformerConfig.positions={self.positions!r}: use one of {POSITIONS}.")
        if self.dtype not in DTYPES:
            raise ConfigError(f"TransformerConfig.dtype={self.dtype!r}: use one of {sorted(DTYPES)}.")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 0:
            raise ConfigError(f"TransformerConfig.window={self.window!r} must be 0 (full) or a window size >= 1.")
        return self


def attention_mask(length: int, window: int = 0) -> jax.Array:
    """bool [T, T]: True where query i may attend key j (j <= i, and i - j < window when window > 0)."""
    i, j = jnp.arange(length)[:, None], jnp.arange(length)[None, :]
    mask = j <= i
    return mask & (i - j < window) if window > 0 else mask


def sinusoidal_positions(length: int, d: int, positions: jax.Array | None = None) -> jax.Array:
    """float32 [T, d]: sin on even dims, cos on odd dims, wavelengths 2π .. 2π·10^4 (Vaswani et al.), at
    positions 0..T-1 or the given position ids [T]."""
    pos = (jnp.arange(length) if positions is None else positions).astype(jnp.float32)[:, None]
    freq = jnp.exp(-math.log(10_000.0) * jnp.arange(0, d, 2, dtype=jnp.float32) / d)
    angles = pos * freq  # [T, ceil(d/2)]
    out = jnp.zeros((length, d), jnp.float32)
    out = out.at[:, 0::2].set(jnp.sin(angles))
    return out.at[:, 1::2].set(jnp.cos(angles[:, : d // 2]))


def rotary(x: jax.Array, base: float = 10_000.0, positions: jax.Array | None = None) -> jax.Array:
    """Rotary positions (Su et al., RoFormer): x [..., T, heads, dh] rotated by position t (0..T-1, or
    the given position ids [T]) in pairs (x[:dh/2], x[dh/2:]); computed in float32, returned in x's dtype."""
    t, dh = x.shape[-3], x.shape[-1]
    freq = base ** (-jnp.arange(dh // 2, dtype=jnp.float32) / (dh // 2))
    pos = jnp.arange(t) if positions is None else positions
    angles = pos.astype(jnp.float32)[:, None] * freq  # [T, dh/2]
    cos, sin = jnp.cos(angles)[:, None], jnp.sin(angles)[:, None]  # [T, 1, dh/2]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x.dtype)


class DecoderTransformer(eqx.Module):
    """See the module docstring. Parameters ~ 12 d^2 L + d (V + K)."""

    embedding: jax.Array  # [V, d]
    layers: AttentionBlock  # stacked: every array has a leading [L] axis
    ln_final: LayerNorm
    head: Dense
    positions: str = eqx.field(static=True)
    window: int = eqx.field(static=True)
    rope_base: float = eqx.field(static=True)
    causal: bool = eqx.field(static=True, default=True)  # tells the probes right padding is harmless
    tree_attention: bool = eqx.field(static=True, default=True)  # __call__ takes positions= and mask=

    def __init__(self, config: TransformerConfig, key: jax.Array):
        cfg = config.validate()
        ke, kl, kh = jax.random.split(key, 3)
        d = cfg.d_model
        self.embedding = jax.random.normal(ke, (cfg.vocab_size, d), jnp.float32)
        block = lambda k: AttentionBlock(d, cfg.num_heads, cfg.mlp_ratio, k)  # noqa: E731
        self.layers = eqx.filter_vmap(block)(jax.random.split(kl, cfg.num_layers))
        self.ln_final = LayerNorm(d)
        self.head = Dense(d, cfg.num_outputs, kh)
        self.positions, self.window, self.rope_base, self.causal = cfg.positions, cfg.window, cfg.rope_base, True
        self.tree_attention = True
        if cfg.dtype != "float32":
            for name in ("embedding", "layers", "ln_final", "head"):
                setattr(self, name, cast_floating(getattr(self, name), DTYPES[cfg.dtype]))

    @property
    def dtype(self):
        return self.embedding.dtype

    def embed(self, tokens: jax.Array) -> jax.Array:
        """tokens [T] int -> embeddings [T, d] (model dtype; positions are added in __call__)."""
        return self.embedding[tokens]

    def __call__(self, inputs: jax.Array, positions: jax.Array | None = None,
                 mask: jax.Array | None = None) -> SequenceOutput:
        """tokens [T] int or embeddings [T, d] -> SequenceOutput(hidden [L, T, d], output [T, K] f32).
        positions [T] int: position ids (default 0..T-1); mask [T, T] bool: the keys each query attends
        (default causal); a window > 0 still limits keys to position ids within `window` of the query's."""
        x = self.embed(inputs) if jnp.issubdtype(inputs.dtype, jnp.integer) else inputs.astype(self.dtype)
        length, d = x.shape
        if self.positions == "sinusoidal":
            x = x + sinusoidal_positions(length, d, positions).astype(x.dtype)
        mask = attention_mask(length) if mask is None else mask
        if self.window > 0:
            pos = jnp.arange(length) if positions is None else positions
            mask = mask & (pos[:, None] - pos[None, :] < self.window)
        qk = (lambda t: rotary(t, self.rope_base, positions)) if self.positions == "rotary" else None
        params, static = eqx.partition(self.layers, eqx.is_array)

        def step(h, p):
            h = eqx.combine(p, static)(h, mask=mask, qk_transform=qk)
            return h, h

        h, hidden = jax.lax.scan(step, x, params)
        return SequenceOutput(hidden, self.head(self.ln_final(h)).astype(jnp.float32))
