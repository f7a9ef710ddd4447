"""Perceiver actor-critic network for offline multi-task RL (PAC; Springenberg et al., ICML 2024).

Per-modality encoders make input tokens [B, Ti, d]: proprioception (padded to `obs_max`, padded
dims zeroed, then an MLP -> `num_obs_tokens` tokens), an optional uint8 image [B, C, H, W] (two
stride-2 3x3 convs, one token per output pixel) and a task-id embedding (1 token). `num_latents`
learned latents cross-attend the inputs, then `num_layers` self-attention blocks (pre-LayerNorm,
GELU MLP, stacked and run with `lax.scan` so compile time does not grow with depth) -> latents
[B, N, d]. Decoders (one cross-attention block each, queries never attend to each other):

    policy_logits(latents)                    -> [B, D_max, K]  one learned query per action dim
    critic_logits(latents, actions [B,M,D_max]) -> [B, M, C]    one query per action, built by an MLP

so scoring M candidate actions re-runs only the small critic decoder. Tasks with different
observation / action sizes share one model: `obs_sizes[t]`, `action_sizes[t]` give the real sizes
of task t; padded observation and action dims are masked to zero before any layer sees them.

Compute dtype follows the parameters: cast the model with `cast_floating(model, jnp.bfloat16)` for
bf16 compute (LayerNorm statistics and attention softmax stay in float32; logits come out float32).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from rillet.errors import ConfigError
from rillet.learners.networks.attention import AttentionBlock, Dense, LayerNorm, cast_floating

__all__ = ["PerceiverConfig", "PRESETS", "ATTENTION_IMPLEMENTATIONS", "get_config", "PerceiverActorCritic",
           "count_params", "cast_floating"]


@dataclasses.dataclass(frozen=True)
class PerceiverConfig:
    """Sizes. Parameter count ~ d_model^2 * (12 * num_layers + 37 + num_obs_tokens) (each attention
    block is ~12 d^2: 4 d^2 attention + 8 d^2 MLP; 3 cross-attention blocks + action/obs MLPs)."""

    d_model: int = 128
    num_heads: int = 4
    num_latents: int = 32
    num_layers: int = 2  # self-attention blocks over the latents
    mlp_ratio: int = 4
    num_obs_tokens: int = 4  # proprioception MLP output tokens
    image_shape: tuple[int, int, int] | None = None  # (C, H, W) uint8 images, or None: no image encoder
    image_channels: tuple[int, int] = (16, 32)

    def __post_init__(self):
        for name in ("image_shape", "image_channels"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))

    def validate(self) -> "PerceiverConfig":
        for name in ("d_model", "num_heads", "num_latents", "mlp_ratio", "num_obs_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"PerceiverConfig.{name}={v!r} is invalid: it must be an integer >= 1.")
        if isinstance(self.num_layers, bool) or not isinstance(self.num_layers, int) or self.num_layers < 0:
            raise ConfigError(f"PerceiverConfig.num_layers={self.num_layers!r} must be an integer >= 0.")
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"PerceiverConfig.d_model={self.d_model} must be divisible by num_heads={self.num_heads}."
            )
        if self.image_shape is not None and (len(self.image_shape) != 3 or min(self.image_shape) < 1):
            raise ConfigError(f"PerceiverConfig.image_shape={self.image_shape!r} must be None or (C, H, W).")
        return self


# Nominal sizes (with 64-dim observations, 16-dim actions, K=21 bins, C=101 atoms, a few tasks).
PRESETS: dict[str, PerceiverConfig] = {
    "test": PerceiverConfig(d_model=16, num_heads=2, num_latents=4, num_layers=1, num_obs_tokens=2),
    "xs": PerceiverConfig(d_model=128, num_heads=4, num_latents=32, num_layers=2),  # ~1.1M
    "s": PerceiverConfig(d_model=256, num_heads=8, num_latents=64, num_layers=9),  # ~9.9M
    "m": PerceiverConfig(d_model=768, num_heads=12, num_latents=128, num_layers=11),  # ~103M
    "l": PerceiverConfig(d_model=2048, num_heads=16, num_latents=256, num_layers=16),  # ~0.98B
}
NOMINAL_PARAMS = {"xs": 1e6, "s": 1e7, "m": 1e8, "l": 1e9}
ATTENTION_IMPLEMENTATIONS = (None, "cudnn")


def get_config(network: str | PerceiverConfig) -> PerceiverConfig:
    """A preset name ("test", "xs", "s", "m", "l") or a PerceiverConfig -> validated PerceiverConfig."""
    if isinstance(network, PerceiverConfig):
        return network.validate()
    if network not in PRESETS:
        raise ConfigError(f"Unknown Perceiver size {network!r}; use one of {sorted(PRESETS)} or a PerceiverConfig.")
    return PRESETS[network]


def count_params(model: Any) -> int:
    """Number of floating-point parameters (works on real models and on `jax.eval_shape` outputs)."""
    leaves = jax.tree.leaves(model)
    return int(sum(math.prod(x.shape) for x in leaves
                   if hasattr(x, "shape") and hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)))


class ImageEncoder(eqx.Module):
    """uint8 [B, C, H, W] -> tokens [B, ceil(H/4) * ceil(W/4), d] (two stride-2 3x3 ReLU convs)."""

    kernels: tuple[jax.Array, jax.Array]
    biases: tuple[jax.Array, jax.Array]
    proj: Dense
    pos: jax.Array

    def __init__(self, shape: tuple[int, int, int], channels: tuple[int, int], d: int, key: jax.Array):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        c, h, w = shape
        c1, c2 = channels
        self.kernels = (jax.random.normal(k1, (c1, c, 3, 3)) / math.sqrt(9 * c),
                        jax.random.normal(k2, (c2, c1, 3, 3)) / math.sqrt(9 * c1))
        self.biases = (jnp.zeros((c1,)), jnp.zeros((c2,)))
        self.proj = Dense(c2, d, k3)
        num_tokens = math.ceil(math.ceil(h / 2) / 2) * math.ceil(math.ceil(w / 2) / 2)
        self.pos = jax.random.normal(k4, (num_tokens, d)) * 0.02

    def __call__(self, image: jax.Array, dtype) -> jax.Array:
        x = jnp.asarray(image).astype(dtype) / 255.0
        for kernel, bias in zip(self.kernels, self.biases):
            x = jax.lax.conv_general_dilated(x, kernel.astype(dtype), (2, 2), "SAME")
            x = jax.nn.relu(x + bias.astype(dtype)[:, None, None])
        x = x.reshape(x.shape[0], x.shape[1], -1).transpose(0, 2, 1)  # [B, P, c2]
        return self.proj(x) + self.pos


class PerceiverActorCritic(eqx.Module):
    """See the module docstring. obs [B, obs_max] f32, task_id [B] int32, image [B, C, H, W] uint8."""

    obs_mlp: tuple[Dense, Dense]
    obs_pos: jax.Array
    task_embed: jax.Array
    image: ImageEncoder | None
    latents: jax.Array
    encoder: AttentionBlock
    layers: AttentionBlock | None  # stacked: every array has a leading [num_layers] axis
    ln_latents: LayerNorm
    policy_queries: jax.Array
    policy_decoder: AttentionBlock
    policy_head: Dense
    action_mlp: tuple[Dense, Dense]
    critic_query: jax.Array
    critic_decoder: AttentionBlock
    critic_head: Dense
    obs_sizes: tuple[int, ...] = eqx.field(static=True)
    action_sizes: tuple[int, ...] = eqx.field(static=True)
    num_obs_tokens: int = eqx.field(static=True)

    def __init__(self, config: PerceiverConfig, obs_sizes: Sequence[int], action_sizes: Sequence[int],
                 num_bins: int, num_atoms: int, key: jax.Array, attention: str | None = None):
        """attention: jax.nn.dot_product_attention's implementation in the latent self-attention
        blocks, None (XLA, any device) or "cudnn" (fused flash attention on NVIDIA GPUs; bfloat16
        compute, head size <= 128). It changes speed, not the function, so it is not part of the
        config. Cross-attention stays on XLA: cuDNN rejects its few input tokens (seen on an H200:
        "Unsupported sequence length Q 256, KV 5")."""
        cfg = config.validate()
        if attention not in ATTENTION_IMPLEMENTATIONS:
            raise ConfigError(f"attention={attention!r} must be one of {ATTENTION_IMPLEMENTATIONS} (None: XLA).")
        if len(obs_sizes) != len(action_sizes) or not obs_sizes:
            raise ConfigError("obs_sizes and action_sizes must be equally long, one entry per task (>= 1 task).")
        d, t = cfg.d_model, cfg.num_obs_tokens
        self.obs_sizes, self.action_sizes = tuple(map(int, obs_sizes)), tuple(map(int, action_sizes))
        self.num_obs_tokens = t
        obs_max, d_max = max(self.obs_sizes), max(self.action_sizes)
        ks = iter(jax.random.split(key, 16))
        block = lambda k: AttentionBlock(d, cfg.num_heads, cfg.mlp_ratio, k, attention)  # noqa: E731
        self.obs_mlp = (Dense(2 * obs_max, d, next(ks)), Dense(d, t * d, next(ks)))
        self.obs_pos = jax.random.normal(next(ks), (t, d)) * 0.02
        self.task_embed = jax.random.normal(next(ks), (len(self.obs_sizes), d))
        image_key = next(ks)
        self.image = (None if cfg.image_shape is None
                      else ImageEncoder(cfg.image_shape, cfg.image_channels, d, image_key))
        self.latents = jax.random.normal(next(ks), (cfg.num_latents, d)) * 0.02
        self.encoder = block(next(ks))
        layer_keys = jax.random.split(next(ks), max(cfg.num_layers, 1))
        self.layers = eqx.filter_vmap(block)(layer_keys) if cfg.num_layers else None
        self.ln_latents = LayerNorm(d)
        self.policy_queries = jax.random.normal(next(ks), (d_max, d)) * 0.02
        self.policy_decoder = block(next(ks))
        self.policy_head = Dense(d, num_bins, next(ks), scale=0.01)  # near-uniform initial policy
        self.action_mlp = (Dense(2 * d_max, d, next(ks)), Dense(d, d, next(ks)))
        self.critic_query = jax.random.normal(next(ks), (d,)) * 0.02
        self.critic_decoder = block(next(ks))
        self.critic_head = Dense(d, num_atoms, next(ks), scale=0.01)  # near-uniform initial Z

    @property
    def dtype(self):
        return self.latents.dtype

    def masks(self, task_id: jax.Array) -> tuple[jax.Array, jax.Array]:
        """task_id [B] -> (obs_mask [B, obs_max] bool, action_mask [B, D_max] bool)."""
        obs_n = jnp.asarray(self.obs_sizes, jnp.int32)[task_id]
        act_n = jnp.asarray(self.action_sizes, jnp.int32)[task_id]
        obs_mask = jnp.arange(max(self.obs_sizes)) < obs_n[:, None]
        return obs_mask, jnp.arange(max(self.action_sizes)) < act_n[:, None]

    def encode(self, obs: jax.Array, task_id: jax.Array, image: jax.Array | None = None) -> jax.Array:
        """obs [B, obs_max], task_id [B] (, image [B, C, H, W]) -> latents [B, N, d] (model dtype)."""
        dt = self.dtype
        obs_mask, _ = self.masks(task_id)
        x = jnp.where(obs_mask, obs, 0).astype(dt)
        x = jnp.concatenate([x, obs_mask.astype(dt)], axis=-1)
        x = self.obs_mlp[1](jax.nn.gelu(self.obs_mlp[0](x)))
        tokens = [x.reshape(x.shape[0], self.num_obs_tokens, -1) + self.obs_pos, self.task_embed[task_id][:, None]]
        if self.image is not None:
            if image is None:
                raise ValueError("This model has an image encoder: pass image [B, C, H, W] uint8.")
            tokens.append(self.image(image, dt))
        inputs = jnp.concatenate(tokens, axis=1)
        lat = self.encoder(jnp.broadcast_to(self.latents, (obs.shape[0],) + self.latents.shape), inputs)
        if self.layers is not None:
            params, static = eqx.partition(self.layers, eqx.is_array)
            lat, _ = jax.lax.scan(lambda h, p: (eqx.combine(p, static)(h), None), lat, params)
        return self.ln_latents(lat)

    def policy_logits(self, latents: jax.Array) -> jax.Array:
        """latents [B, N, d] -> float32 logits [B, D_max, K] over each dim's bins."""
        q = jnp.broadcast_to(self.policy_queries, (latents.shape[0],) + self.policy_queries.shape)
        return self.policy_head(self.policy_decoder(q, latents)).astype(jnp.float32)

    def critic_logits(self, latents: jax.Array, actions: jax.Array, action_mask: jax.Array) -> jax.Array:
        """latents [B, N, d], actions [B, M, D_max] in [-1, 1], action_mask [B, D_max] -> [B, M, C] f32."""
        dt = self.dtype
        m = jnp.broadcast_to(action_mask[:, None], actions.shape)
        a = jnp.concatenate([jnp.where(m, actions, 0).astype(dt), m.astype(dt)], axis=-1)
        q = self.critic_query + self.action_mlp[1](jax.nn.gelu(self.action_mlp[0](a)))  # [B, M, d]
        return self.critic_head(self.critic_decoder(q, latents)).astype(jnp.float32)
