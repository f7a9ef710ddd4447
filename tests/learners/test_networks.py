"""Shapes and construction rules of the DQN Q-networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError
from rillet.learners.dqn import DQNConfig
from rillet.learners.networks import DuelingHead, QNetwork, q_network
from rillet.learners.networks.mlp import MLP
from rillet.learners.networks.nature_dqn import NatureDQN, conv_output_hw

CARTPOLE = StepSpec(ArraySpec((4,), "float32"), ArraySpec((), "int32"), num_actions=2, env_id="CartPole-v1")
ATARI = StepSpec(ArraySpec((4, 84, 84), "uint8"), ArraySpec((), "int32"), num_actions=6, env_id="Pong-v5")
KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize("lead", [(), (5,), (3, 2)])
def test_mlp_shapes(lead):
    net = MLP(4, (8, 8), 3, KEY)
    out = net(jnp.ones(lead + (4,), jnp.float32))
    assert out.shape == lead + (3,) and out.dtype == jnp.float32


def test_mlp_without_hidden_layers_is_affine():
    net = MLP(3, (), 2, KEY)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    w, b = np.asarray(net.layers[0].weight), np.asarray(net.layers[0].bias)
    np.testing.assert_allclose(net(x), x @ w.T + b, rtol=1e-6)


def test_nature_dqn_torso_shapes():
    assert conv_output_hw(84, 84) == (7, 7)
    torso = NatureDQN(4, 84, 84, key=KEY)
    assert torso.dense.in_features == 64 * 7 * 7
    single = torso(jnp.zeros((4, 84, 84), jnp.uint8))
    assert single.shape == (512,)
    obs = jax.random.randint(KEY, (2, 3, 4, 84, 84), 0, 256).astype(jnp.uint8)
    out = torso(obs)
    assert out.shape == (2, 3, 512) and out.dtype == jnp.float32
    # Leading axes are only vmapped over: each example equals its unbatched result.
    np.testing.assert_allclose(out[1, 2], torso(obs[1, 2]), rtol=1e-5, atol=1e-6)


def test_nature_dqn_scales_pixels():
    torso = NatureDQN(4, 84, 84, key=KEY)
    frames = jax.random.randint(KEY, (4, 84, 84), 0, 256).astype(jnp.uint8)
    manual = frames.astype(jnp.float32) / 255.0
    for conv in torso.convs:
        manual = jax.nn.relu(conv(manual))
    manual = jax.nn.relu(torso.dense(manual.reshape(-1)))
    np.testing.assert_allclose(torso(frames), manual, rtol=1e-5, atol=1e-6)


def test_nature_dqn_rejects_tiny_images():
    with pytest.raises(ConfigError, match="36x36"):
        NatureDQN(4, 20, 20, key=KEY)


@pytest.mark.parametrize("dueling", [False, True])
def test_q_network_cartpole(dueling):
    net = q_network(CARTPOLE, DQNConfig(hidden_sizes=(16, 16), dueling=dueling), KEY)
    q = net(np.zeros((7, 4), np.float32))
    assert q.shape == (7, 2) and q.dtype == jnp.float32


@pytest.mark.parametrize("dueling", [False, True])
def test_q_network_atari(dueling):
    net = q_network(ATARI, DQNConfig(dueling=dueling), KEY)
    assert isinstance(net, QNetwork) and isinstance(net.torso, NatureDQN)
    q = net(np.zeros((3, 4, 84, 84), np.uint8))
    assert q.shape == (3, 6) and q.dtype == jnp.float32


def test_dueling_mean_q_equals_value():
    net = q_network(CARTPOLE, DQNConfig(hidden_sizes=(16,), dueling=True), KEY)
    assert isinstance(net.head, DuelingHead)
    x = jax.random.normal(KEY, (5, 4))
    q = net(x)
    value = jax.vmap(net.head.value)(net.torso(x))[:, 0]
    np.testing.assert_allclose(q.mean(axis=-1), value, rtol=1e-5, atol=1e-6)


def test_continuous_actions_rejected():
    spec = StepSpec(ArraySpec((3,), "float32"), ArraySpec((1,), "float32"), num_actions=None, env_id="Pendulum-v1")
    with pytest.raises(ConfigError, match="discrete"):
        q_network(spec, DQNConfig(), KEY)


@pytest.mark.parametrize(
    "obs",
    [ArraySpec((), "float32"), ArraySpec((8, 8), "uint8"), ArraySpec((1, 2, 3, 4), "uint8")],
)
def test_unsupported_observation_rank_rejected(obs):
    spec = StepSpec(obs, ArraySpec((), "int32"), num_actions=3)
    with pytest.raises(ConfigError, match="Unsupported observation spec"):
        q_network(spec, DQNConfig(), KEY)


def test_float_grids_are_flattened_into_the_mlp():
    spec = StepSpec(ArraySpec((5, 5), "float32"), ArraySpec((), "int32"), num_actions=2, env_id="bsuite/deep_sea/0")
    net = q_network(spec, DQNConfig(hidden_sizes=(16,)), KEY)
    obs = np.random.default_rng(0).normal(size=(3, 7, 5, 5)).astype(np.float32)
    q = np.asarray(net(obs))
    assert q.shape == (3, 7, 2)
    np.testing.assert_allclose(q[1, 2], np.asarray(net(obs[1, 2])), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q, np.asarray(net.head(net.torso.module(obs.reshape(3, 7, 25)))), rtol=1e-5, atol=1e-6)


def test_float_images_rejected():
    spec = StepSpec(ArraySpec((4, 84, 84), "float32"), ArraySpec((), "int32"), num_actions=3)
    with pytest.raises(ConfigError, match="uint8"):
        q_network(spec, DQNConfig(), KEY)


def test_dueling_mlp_needs_hidden_layer():
    with pytest.raises(ConfigError, match="hidden_sizes"):
        q_network(CARTPOLE, DQNConfig(hidden_sizes=(), dueling=True), KEY)
