"""A normaliser-free residual torso ("nfnet"): residual stacks whose activations keep unit scale at
initialisation without batch norm (Brock et al. 2021, "Characterizing signal propagation to close the
performance gap in unnormalized ResNets" and "High-Performance Large-Scale Image Recognition Without
Normalization"); MEME (Kapturowski et al. 2023) uses such a torso.

Three ingredients, all in the forward pass:
- scaled weight standardisation on every conv and linear layer: per output unit,
  W_hat = gain * (W - mean(W)) / (std(W) * sqrt(fan_in)), so sum(W_hat**2) = gain**2 per unit and a
  layer maps inputs of variance v (across its fan-in) to outputs of variance ~v, and removes the
  inputs' common mean (the "mean shift" a ReLU makes);
- activations scaled by gamma = 1 / std(act(z)), z ~ N(0, 1), so that they preserve variance
  (`activation_gamma`);
- residual blocks h_{i+1} = h_i + alpha * g_i * f_i(h_i / beta_i), with beta_i the expected std of h_i
  at initialisation (beta_0 = 1, beta_{i+1}**2 = beta_i**2 + alpha**2) and g_i a learnable skip gain.
  With skip_init (the default, as in NFNets) g_i starts at 0, so every block is the identity at
  initialisation and the betas describe the stream once the gains reach 1 (NFNets' convention).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet.errors import ConfigError
from rillet.learners.networks.mlp import batch_apply

__all__ = ["NFNetTorso", "ResidualStack", "ResidualBlock", "WSConv", "WSLinear", "activation_gamma",
           "standardise", "ACTIVATIONS"]

# Defaults. CHANNELS and BLOCKS_PER_STAGE are small, CPU-sized choices in the shape of MEME's /
# IMPALA's residual torso (stages of a downsampling conv and residual blocks); the papers' networks
# are wider and deeper, and MEME's exact sizes are not verified here.
CHANNELS = (16, 32, 32)
BLOCKS_PER_STAGE = 1
VECTOR_BLOCKS = 2  # residual blocks of the vector path (our choice)
ALPHA = 0.2  # NF-ResNets' default residual scale
WS_EPS = 1e-4  # floor on var(W) * fan_in, as in Brock et al.

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
}


def _numpy_activation(name: str, z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, 0.0)
    erf = np.frompyfunc(math.erf, 1, 1)
    return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)).astype(np.float64))


@functools.lru_cache(maxsize=None)
def activation_gamma(name: str) -> float:
    """gamma = 1 / std(act(z)) for z ~ N(0, 1), by quadrature over [-12, 12].

    ReLU has the closed form sqrt(2 / (1 - 1/pi)) ~ 1.7129: E[relu(z)] = 1/sqrt(2 pi) and
    E[relu(z)**2] = 1/2, so Var = (1 - 1/pi) / 2. The variance (not the second moment) is what matters,
    because a standardised layer after the activation removes its mean. GELU (exact, not the tanh
    approximation) gives ~1.7009. tests/learners/test_nfnet.py checks both against sampled values.
    """
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of {tuple(ACTIVATIONS)}.")
    z, dz = np.linspace(-12.0, 12.0, 48_001, retstep=True)
    weight = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi) * dz  # the tails beyond 12 are negligible
    a = _numpy_activation(name, z)
    mean, second = np.sum(a * weight), np.sum(a * a * weight)
    return float(1.0 / math.sqrt(second - mean * mean))


def standardise(weight: jax.Array, gain: jax.Array) -> jax.Array:
    """Scaled weight standardisation: weight [O, ...] (fan-in = the rest), gain [O] -> [O, ...], each
    output unit's weights centred and scaled to sum of squares gain**2 (Brock et al. 2021a, eq. 3)."""
    axes = tuple(range(1, weight.ndim))
    fan_in = math.prod(weight.shape[1:])
    mean = jnp.mean(weight, axis=axes, keepdims=True)
    var = jnp.var(weight, axis=axes, keepdims=True)
    scale = jax.lax.rsqrt(jnp.maximum(var * fan_in, WS_EPS))
    return (weight - mean) * scale * gain.reshape((-1,) + (1,) * len(axes))


class WSLinear(eqx.Module):
    """Linear layer with scaled weight standardisation: x [in] -> [out]. Weights N(0, 1) (their scale
    is standardised away), gain 1, bias 0."""

    weight: jax.Array
    bias: jax.Array
    gain: jax.Array

    def __init__(self, in_size: int, out_size: int, key: jax.Array):
        self.weight = jax.random.normal(key, (int(out_size), int(in_size)), jnp.float32)
        self.bias = jnp.zeros((int(out_size),), jnp.float32)
        self.gain = jnp.ones((int(out_size),), jnp.float32)

    def __call__(self, x: jax.Array) -> jax.Array:
        return standardise(self.weight, self.gain) @ x + self.bias


class WSConv(eqx.Module):
    """2-D conv with scaled weight standardisation, 'SAME' padding: x [C, H, W] -> [O, ceil(H/s),
    ceil(W/s)] (never below 1x1). Weights N(0, 1), gain 1, bias 0."""

    weight: jax.Array
    bias: jax.Array
    gain: jax.Array
    stride: int = eqx.field(static=True)

    def __init__(self, in_channels: int, out_channels: int, key: jax.Array, kernel: int = 3, stride: int = 1):
        shape = (int(out_channels), int(in_channels), int(kernel), int(kernel))
        self.weight = jax.random.normal(key, shape, jnp.float32)
        self.bias = jnp.zeros((int(out_channels),), jnp.float32)
        self.gain = jnp.ones((int(out_channels),), jnp.float32)
        self.stride = int(stride)

    def __call__(self, x: jax.Array) -> jax.Array:
        out = jax.lax.conv_general_dilated(
            x[None], standardise(self.weight, self.gain), (self.stride, self.stride), "SAME",
            dimension_numbers=("NCHW", "OIHW", "NCHW"))[0]
        return out + self.bias[:, None, None]


class ResidualBlock(eqx.Module):
    """Branch f(x) = second(act(first(act(x)))) of two standardised layers (WSConv or WSLinear, same
    in and out size) and a learnable skip gain g [] on it: h -> h + alpha * g * f(h / beta)."""

    first: eqx.Module
    second: eqx.Module
    skip_gain: jax.Array
    activation: str = eqx.field(static=True)
    gamma: float = eqx.field(static=True)

    def __init__(self, make_layer: Callable[[jax.Array], eqx.Module], key: jax.Array, activation: str,
                 skip_init: bool):
        k1, k2 = jax.random.split(key)
        self.first, self.second = make_layer(k1), make_layer(k2)
        self.skip_gain = jnp.asarray(0.0 if skip_init else 1.0, jnp.float32)
        self.activation, self.gamma = activation, activation_gamma(activation)

    def act(self, x: jax.Array) -> jax.Array:
        """The variance-preserving activation gamma * act(x)."""
        return ACTIVATIONS[self.activation](x) * self.gamma

    def branch(self, x: jax.Array) -> jax.Array:
        """f(x): x [*event] -> [*event]; unit variance in, ~unit variance out at initialisation."""
        return self.second(self.act(self.first(self.act(x))))


class ResidualStack(eqx.Module):
    """Residual blocks sharing one beta schedule: h [*event] -> h [*event].

    betas[i] = expected std of block i's input (beta_0 = 1, beta_{i+1}**2 = beta_i**2 + alpha**2);
    out_beta = the expected std of the output.
    """

    blocks: tuple[ResidualBlock, ...]
    alpha: float = eqx.field(static=True)
    betas: tuple[float, ...] = eqx.field(static=True)

    def __init__(self, make_layer, num_blocks: int, key: jax.Array, alpha: float, activation: str,
                 skip_init: bool):
        keys = jax.random.split(key, max(int(num_blocks), 1))[: int(num_blocks)]
        self.blocks = tuple(ResidualBlock(make_layer, k, activation, skip_init) for k in keys)
        self.alpha = float(alpha)
        self.betas = tuple(math.sqrt(1.0 + i * self.alpha ** 2) for i in range(int(num_blocks)))

    @property
    def out_beta(self) -> float:
        return math.sqrt(1.0 + len(self.blocks) * self.alpha ** 2)

    def trace(self, h: jax.Array) -> tuple[list[jax.Array], list[jax.Array]]:
        """h_0 [*event] -> ([h_1, ..., h_N], [f_0(h_0 / beta_0), ..., f_{N-1}(h_{N-1} / beta_{N-1})]):
        the residual stream after every block and every branch's output (before alpha * g)."""
        streams, branches = [], []
        for block, beta in zip(self.blocks, self.betas):
            f = block.branch(h / beta)
            h = h + self.alpha * block.skip_gain * f
            streams.append(h)
            branches.append(f)
        return streams, branches

    def __call__(self, h: jax.Array) -> jax.Array:
        for block, beta in zip(self.blocks, self.betas):
            h = h + self.alpha * block.skip_gain * block.branch(h / beta)
        return h


def _check_positive(name: str, values: Sequence[int], allow_zero: bool = False) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    low = 0 if allow_zero else 1
    if not values or any(v < low for v in values):
        raise ConfigError(f"NFNetTorso needs {name} >= {low}, got {values}.")
    return values


class NFNetTorso(eqx.Module):
    """Normaliser-free residual torso: obs [..., *obs_shape] -> features [..., features] (gamma-scaled
    activation, so ~unit variance at initialisation). Leading axes are vmapped over.

    uint8 images [C, H, W] (scaled by 1/255, as NatureDQN): a 3x3 stem conv to channels[0], then per
    stage a 3x3 stride-2 'SAME' conv of act(h / beta) (84 -> 42 -> 21 -> 11; a 7x7 image -> 4 -> 2 -> 1,
    never below 1x1) and `blocks_per_stage` residual blocks of two 3x3 convs; then flatten(act(h / beta))
    -> standardised linear -> act. Atari (4, 84, 84) with the defaults flattens 32 * 11 * 11 = 3872.
    Vectors [D] (any numeric dtype, cast to float32, used as given like the MLP torso): a standardised
    linear stem to `features`, `vector_blocks` residual blocks of two standardised linears, then
    act(h / beta) -> standardised linear -> act.
    The unit-scale analysis takes h_0 of unit std; with zero biases (as at init) every layer is
    positively homogeneous, so another input scale (pixels / 255; MiniGrid's entries up to ~121) scales
    the whole stream and the features by the same factor and leaves the blocks' relative scales intact.
    alpha: residual scale; skip_init: skip gains start at 0 (else 1); activation: "relu" or "gelu".
    """

    stem: eqx.Module
    stages: tuple[tuple, ...]  # ((down WSConv or None, ResidualStack), ...)
    head: WSLinear
    obs_shape: tuple[int, ...] = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    gamma: float = eqx.field(static=True)

    def __init__(self, obs_shape: Sequence[int], features: int, key: jax.Array, *,
                 channels: Sequence[int] = CHANNELS, blocks_per_stage: int = BLOCKS_PER_STAGE,
                 vector_blocks: int = VECTOR_BLOCKS, alpha: float = ALPHA, activation: str = "relu",
                 skip_init: bool = True):
        self.obs_shape = tuple(int(d) for d in obs_shape)
        (features,) = _check_positive("features", (features,))
        self.activation, self.gamma = activation, activation_gamma(activation)
        if not alpha >= 0.0:
            raise ConfigError(f"NFNetTorso needs alpha >= 0, got {alpha}.")
        stem_key, stage_key, head_key = jax.random.split(key, 3)
        block = dict(alpha=alpha, activation=activation, skip_init=skip_init)
        if len(self.obs_shape) == 1:
            (num_blocks,) = _check_positive("vector_blocks", (vector_blocks,), allow_zero=True)
            self.stem = WSLinear(self.obs_shape[0], features, stem_key)
            stack = ResidualStack(lambda k: WSLinear(features, features, k), num_blocks, stage_key, **block)
            self.stages = ((None, stack),)
            self.head = WSLinear(features, features, head_key)
        elif len(self.obs_shape) == 3:
            channels = _check_positive("channels", channels)
            (num_blocks,) = _check_positive("blocks_per_stage", (blocks_per_stage,), allow_zero=True)
            self.stem = WSConv(self.obs_shape[0], channels[0], stem_key)
            stages, (height, width), c_in = [], self.obs_shape[1:], channels[0]
            for c, k in zip(channels, jax.random.split(stage_key, len(channels))):
                k_down, k_stack = jax.random.split(k)
                stack = ResidualStack(lambda kk, c=c: WSConv(c, c, kk), num_blocks, k_stack, **block)
                stages.append((WSConv(c_in, c, k_down, stride=2), stack))
                height, width, c_in = -(-height // 2), -(-width // 2), c
            self.stages = tuple(stages)
            self.head = WSLinear(c_in * height * width, features, head_key)
        else:
            raise ConfigError(f"NFNetTorso takes vectors [D] or images [C, H, W], got shape {self.obs_shape}.")

    @property
    def is_image(self) -> bool:
        return len(self.obs_shape) == 3

    def act(self, x: jax.Array) -> jax.Array:
        """The variance-preserving activation gamma * act(x)."""
        return ACTIVATIONS[self.activation](x) * self.gamma

    def _single(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        h, beta = self.stem(x / 255.0 if self.is_image else x), 1.0
        for down, stack in self.stages:
            if down is not None:
                h, beta = down(self.act(h / beta)), 1.0
            h, beta = stack(h), stack.out_beta
        return self.act(self.head(self.act(h / beta).reshape(-1)))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        n = len(self.obs_shape)
        if x.ndim < n or tuple(x.shape[x.ndim - n:]) != self.obs_shape:
            raise ValueError(f"NFNetTorso expects observations [..., {self.obs_shape}], got shape {x.shape}.")
        return batch_apply(self._single, x, event_ndim=n)
