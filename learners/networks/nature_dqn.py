"""The Nature-DQN convolutional torso (Mnih et al., 2015) for stacked uint8 frames."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from rillet.errors import ConfigError
from rillet.learners.networks.mlp import batch_apply

# (out_channels, kernel, stride) of the three VALID-padded conv layers.
_CONVS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
FEATURES = 512


def conv_output_hw(height: int, width: int) -> tuple[int, int]:
    """Spatial size after the three convolutions (84x84 -> 7x7)."""
    for _, k, s in _CONVS:
        height, width = (height - k) // s + 1, (width - k) // s + 1
    return height, width


class NatureDQN(eqx.Module):
    """Conv torso: uint8 obs [..., C, H, W] -> ReLU features [..., 512].

    Pixels are scaled by 1/255; leading axes are vmapped over. For Atari EnvPool obs
    (4, 84, 84) the flattened conv output is 64 * 7 * 7 = 3136.
    """

    convs: tuple[eqx.nn.Conv2d, ...]
    dense: eqx.nn.Linear
    obs_shape: tuple[int, int, int] = eqx.field(static=True)

    def __init__(self, in_channels: int, height: int, width: int, key: jax.Array):
        h, w = conv_output_hw(int(height), int(width))
        if h < 1 or w < 1:
            raise ConfigError(
                f"NatureDQN needs images of at least 36x36 pixels, got {height}x{width}. "
                "Resize the observations (EnvPool Atari uses 84x84) or use another torso."
            )
        keys = jax.random.split(key, len(_CONVS) + 1)
        convs, c = [], int(in_channels)
        for (out_c, k, s), ck in zip(_CONVS, keys[:-1]):
            convs.append(eqx.nn.Conv2d(c, out_c, kernel_size=k, stride=s, padding=0, key=ck))
            c = out_c
        self.convs = tuple(convs)
        self.dense = eqx.nn.Linear(c * h * w, FEATURES, key=keys[-1])
        self.obs_shape = (int(in_channels), int(height), int(width))

    def _single(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32) / 255.0
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        return jax.nn.relu(self.dense(x.reshape(-1)))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim < 3 or tuple(x.shape[-3:]) != self.obs_shape:
            raise ValueError(f"NatureDQN expects observations [..., {self.obs_shape}], got shape {x.shape}.")
        return batch_apply(self._single, x, event_ndim=3)
