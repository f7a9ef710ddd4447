"""Q-networks built from a `StepSpec`: obs [B, ...] -> Q-values [B, num_actions]."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet.datasets.specs import StepSpec
from rillet.errors import ConfigError
from rillet.learners.networks.mlp import MLP, batch_apply
from rillet.learners.networks.nature_dqn import FEATURES, NatureDQN
from rillet.learners.networks.nfnet import NFNetTorso

__all__ = ["MLP", "NatureDQN", "NFNetTorso", "Flattened", "LinearHead", "DuelingHead", "QNetwork", "q_network",
           "make_torso",
           "TORSOS"]

# "auto": mlp for vectors [D], nature_dqn for uint8 images [C, H, W]; "nfnet" takes either.
TORSOS = ("auto", "mlp", "nature_dqn", "nfnet")


class LinearHead(eqx.Module):
    """features [..., F] -> Q [..., A]."""

    linear: eqx.nn.Linear

    def __init__(self, in_size: int, num_actions: int, key: jax.Array):
        self.linear = eqx.nn.Linear(in_size, num_actions, key=key)

    def __call__(self, features: jax.Array) -> jax.Array:
        return batch_apply(self.linear, features, event_ndim=1)


class DuelingHead(eqx.Module):
    """Dueling head (Wang et al., 2016): Q = V + A - mean_a(A); features [..., F] -> [..., A]."""

    value: eqx.nn.Linear
    advantage: eqx.nn.Linear

    def __init__(self, in_size: int, num_actions: int, key: jax.Array):
        kv, ka = jax.random.split(key)
        self.value = eqx.nn.Linear(in_size, 1, key=kv)
        self.advantage = eqx.nn.Linear(in_size, num_actions, key=ka)

    def _single(self, f: jax.Array) -> jax.Array:
        adv = self.advantage(f)
        return self.value(f) + adv - jnp.mean(adv)

    def __call__(self, features: jax.Array) -> jax.Array:
        return batch_apply(self._single, features, event_ndim=1)


class Flattened(eqx.Module):
    """`module` over flattened observations: obs [..., *event] (event of rank `rank`) -> module(obs [..., prod])."""

    module: eqx.Module
    rank: int = eqx.field(static=True)

    def __call__(self, observation: jax.Array) -> jax.Array:
        lead = observation.shape[:observation.ndim - self.rank]
        return self.module(jnp.reshape(observation, lead + (-1,)))


class QNetwork(eqx.Module):
    """torso then head: obs [..., *obs_shape] -> Q [..., A]."""

    torso: eqx.Module
    head: eqx.Module

    def __call__(self, observation: jax.Array) -> jax.Array:
        return self.head(self.torso(observation))


def q_network(spec: StepSpec, config: Any, key: jax.Array) -> eqx.Module:
    """Builds the Q-network for `spec`.

    Rank-1 observations [D] -> `MLP(D, config.hidden_sizes, A)` (or an MLP torso + dueling head); float
    grids [H, W] -> the same over the flattened grid.
    Rank-3 uint8 observations [C, H, W] -> `NatureDQN` torso + linear (or dueling) head.
    The result maps obs [B, ...] -> q [B, A] (any number of leading axes).
    Raises ConfigError for continuous actions or unsupported observation specs.
    """
    num_actions = spec.num_actions
    if num_actions is None:
        raise ConfigError(
            f"DQN needs a discrete action space, but the spec of '{spec.env_id or 'unnamed env'}' has "
            f"continuous actions {spec.action.shape} {spec.action.dtype} (num_actions=None). "
            "Use an environment with discrete actions or a continuous-control learner."
        )
    if int(num_actions) < 1:
        raise ConfigError(f"spec.num_actions must be >= 1, got {num_actions}.")
    if spec.action.shape != () or not np.issubdtype(spec.action.np_dtype, np.integer):
        raise ConfigError(
            f"DQN needs scalar integer actions, got action spec {spec.action.shape} {spec.action.dtype}."
        )
    hidden = tuple(int(h) for h in getattr(config, "hidden_sizes", (256, 256)))
    dueling = bool(getattr(config, "dueling", False))
    kind = getattr(config, "torso", "auto")
    torso_key, head_key = jax.random.split(key)
    if len(spec.observation.shape) == 1 and not dueling and kind in ("auto", "mlp"):
        return MLP(spec.observation.shape[0], hidden, num_actions, key)
    torso, features = make_torso(spec, torso_key, kind, hidden)
    head_cls = DuelingHead if dueling else LinearHead
    return QNetwork(torso, head_cls(features, num_actions, head_key))


def make_torso(spec: StepSpec, key: jax.Array, kind: str = "auto",
               hidden_sizes: tuple[int, ...] = (512,)) -> tuple[eqx.Module, int]:
    """The torso `kind` (one of TORSOS) for `spec`'s observation -> (module, feature size).

    "mlp": rank-1 obs [D] -> ReLU MLP with `hidden_sizes` (output hidden_sizes[-1], ReLU'd); float
    grids [H, W] (e.g. Deep Sea's [N, N]) are flattened first;
    "nature_dqn": uint8 [C, H, W] -> the Nature-DQN conv torso (512 features, hidden_sizes unused);
    "nfnet": vectors [D] or uint8 [C, H, W] -> the normaliser-free residual torso `NFNetTorso` with its
    default widths (output hidden_sizes[-1], also the width of its vector path).
    Raises ConfigError for a kind that does not fit the observation.
    """
    obs = spec.observation
    flat_float = len(obs.shape) == 1 or (len(obs.shape) == 2 and obs.np_dtype != np.uint8)  # vectors, grids
    if kind == "auto":
        kind = "mlp" if flat_float else "nature_dqn"
    if kind == "mlp" and flat_float:
        hidden = tuple(int(h) for h in hidden_sizes)
        if not hidden:
            raise ConfigError("vector observations need at least one torso layer: set hidden_sizes, e.g. (256, 256).")
        mlp = MLP(int(np.prod(obs.shape)), hidden[:-1], hidden[-1], key, activate_final=True)
        return (mlp if len(obs.shape) == 1 else Flattened(mlp, len(obs.shape))), hidden[-1]
    if kind == "nature_dqn" and len(obs.shape) == 3 and obs.np_dtype == np.uint8:
        return NatureDQN(*obs.shape, key=key), FEATURES
    if kind == "nfnet" and (len(obs.shape) == 1 or (len(obs.shape) == 3 and obs.np_dtype == np.uint8)):
        hidden = tuple(int(h) for h in hidden_sizes)
        if not hidden:
            raise ConfigError("the nfnet torso takes its feature size from hidden_sizes[-1]: set hidden_sizes, "
                              "e.g. (256,).")
        return NFNetTorso(obs.shape, hidden[-1], key), hidden[-1]
    if kind not in TORSOS:
        raise ConfigError(f"unknown torso {kind!r}; choose one of {TORSOS}.")
    raise ConfigError(
        f"Unsupported observation spec {obs.shape} {obs.dtype} for the {kind} torso: networks support vectors "
        "[D] and float grids [H, W] (mlp, flattened; nfnet: vectors only) and uint8 images [C, H, W] "
        "(nature_dqn, nfnet; "
        "scaled by 1/255). Flatten, stack or convert it.")
