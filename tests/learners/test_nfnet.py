"""The normaliser-free residual torso: signal propagation at initialisation (and that it fails without
weight standardisation or without the activation gain), shapes on Atari, MiniGrid and vector
observations, and a gradient step through a recurrent network built on it."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError
from rillet.learners.networks import TORSOS, LinearHead, make_torso, nfnet
from rillet.learners.networks.nfnet import NFNetTorso, ResidualStack, WSConv, WSLinear
from rillet.learners.networks.recurrent import CoreInput, recurrent_network
from rillet.learners.r2d2 import R2D2Config

KEY = jax.random.PRNGKey(0)
ATARI = StepSpec(ArraySpec((4, 84, 84), "uint8"), ArraySpec((), "int32"), num_actions=6, env_id="Pong-v5")
# What rillet's EnvPool adapter delivers for MiniGrid-DoorKey-6x6-v0: a float32 vector of 244 entries
# (direction 1, image 7 * 7 * 3 = 147, mission 96 characters; values 0..~121), flattened from a dict.
MINIGRID = StepSpec(ArraySpec((244,), "float32"), ArraySpec((), "int32"), num_actions=7,
                    env_id="MiniGrid-DoorKey-6x6-v0")
CARTPOLE = StepSpec(ArraySpec((4,), "float32"), ArraySpec((), "int32"), num_actions=2, env_id="CartPole-v1")
DEPTH, BAND = 8, (0.5, 2.0)
SHIFT = 0.2  # most mean shift allowed (measured: <= 0.02 with standardisation, >= 0.36 without; 6 seeds)
PATHS = {  # per path of the torso: the event shape and the layer of its residual blocks
    "vector": ((64,), lambda k: WSLinear(64, 64, k)),
    "conv": ((8, 6, 6), lambda k: WSConv(8, 8, k)),
}


def signal(path: str, alpha: float, skip_init: bool, seed: int = 0):
    """A DEPTH-block stack fed h_0 ~ N(0, 1) -> per block: (stream std / beta_{i+1}, mean shift of the
    stream (average squared channel mean / average channel variance), branch gain std(f_i) / std(its
    input h_i / beta_i)) and whether every block left the stream unchanged."""
    event, make_layer = PATHS[path]
    stack = ResidualStack(make_layer, DEPTH, jax.random.PRNGKey(seed), alpha, "relu", skip_init)
    h0 = jnp.asarray(np.random.default_rng(seed).standard_normal((128,) + event), jnp.float32)
    streams, branches = jax.vmap(stack.trace)(h0)
    reduce = (0,) + tuple(range(2, h0.ndim))  # all but the channel axis
    betas_out = stack.betas[1:] + (stack.out_beta,)
    std = [float(jnp.sqrt(jnp.mean(jnp.var(s, axis=reduce)))) / b for s, b in zip(streams, betas_out)]
    shift = [float(jnp.mean(jnp.mean(s, axis=reduce) ** 2) / jnp.mean(jnp.var(s, axis=reduce))) for s in streams]
    inputs = [h0] + streams[:-1]
    gain = [float(jnp.std(f) / jnp.std(h / b)) for f, h, b in zip(branches, inputs, stack.betas)]
    identity = all(bool(jnp.array_equal(s, h0)) for s in streams)
    return np.array(std), np.array(shift), np.array(gain), identity


@eqx.filter_jit
def apply(torso, obs):
    return torso(obs)


def pixels(shape) -> np.ndarray:
    """Random uint8 frames (numpy: each new shape of a jax.random draw costs a compile)."""
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def in_band(values) -> bool:
    return bool(np.all((values >= BAND[0]) & (values <= BAND[1])))


def test_activation_gamma():
    assert nfnet.activation_gamma("relu") == pytest.approx(math.sqrt(2.0 / (1.0 - 1.0 / math.pi)), rel=1e-6)
    z = jnp.asarray(np.random.default_rng(0).standard_normal(1_000_000), jnp.float32)
    for name, act in nfnet.ACTIVATIONS.items():
        assert float(jnp.std(act(z))) * nfnet.activation_gamma(name) == pytest.approx(1.0, abs=5e-3)
    with pytest.raises(ConfigError, match="activation"):
        nfnet.activation_gamma("tanh")


def test_standardised_weights_are_centred_unit_norm_per_output_unit():
    w = jnp.asarray(np.random.default_rng(0).normal(2.0, 7.0, (5, 3, 3, 3)), jnp.float32)
    gain = jnp.arange(1.0, 6.0)
    ws = nfnet.standardise(w, gain)
    np.testing.assert_allclose(ws.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose((ws ** 2).sum(axis=(1, 2, 3)), gain ** 2, rtol=1e-4)


@pytest.mark.parametrize("alpha", [0.2, 1.0])
@pytest.mark.parametrize("path", sorted(PATHS))
def test_stream_tracks_beta_at_init(path, alpha):
    """Skip gains at 1: the stream's std after every block stays within BAND of beta_i, without a mean
    shift, and every branch keeps its input's scale. (At alpha = 0.2 the skip path dominates, so the
    stream's std alone could hardly fail; alpha = 1 and the branch gains are the sensitive checks.)"""
    std, shift, gain, _ = signal(path, alpha, skip_init=False)
    assert in_band(std), f"stream std / beta per block {std.round(3)}"
    assert in_band(gain), f"branch gain per block {gain.round(3)}"
    assert shift.max() < SHIFT, f"mean shift per block {shift.round(3)}"


@pytest.mark.parametrize("path", sorted(PATHS))
def test_skip_init_blocks_start_as_identity_and_branches_keep_scale(path):
    """Default (SkipInit, alpha 0.2): every block is the identity at init, so the stream's std says
    nothing; what must hold is that every branch (scaled in once its gain grows) keeps its input's scale."""
    _, _, gain, identity = signal(path, nfnet.ALPHA, skip_init=True)
    assert identity
    assert in_band(gain), f"branch gain per block {gain.round(3)}"


@pytest.mark.parametrize("path", sorted(PATHS))
def test_without_activation_gain_the_signal_decays(path, monkeypatch):
    """gamma = 1: each branch shrinks its input (ReLU halves the second moment and the next standardised
    layer removes the mean), and at alpha = 1, where branches dominate the stream, the stream falls out
    of band within DEPTH blocks."""
    monkeypatch.setattr(nfnet, "activation_gamma", lambda name: 1.0)
    std, _, gain, _ = signal(path, 1.0, skip_init=False)
    assert gain.max() < BAND[0], f"branch gain per block {gain.round(3)}"
    assert not in_band(std), f"stream std / beta per block {std.round(3)}"


@pytest.mark.parametrize("path", sorted(PATHS))
def test_without_weight_standardisation_the_stream_drifts(path, monkeypatch):
    """Plain weights at a variance-preserving (He) scale: the ReLUs' mean is not removed, so each block
    adds a shared per-channel offset and the stream's mean shift grows with depth (its std over
    examples stays near beta here; the mean shift is what standardisation removes)."""
    def he_scaled(weight, gain):
        return weight / math.sqrt(math.prod(weight.shape[1:])) * gain.reshape((-1,) + (1,) * (weight.ndim - 1))

    monkeypatch.setattr(nfnet, "standardise", he_scaled)
    _, shift, _, _ = signal(path, 1.0, skip_init=False)
    assert shift.max() > SHIFT, f"mean shift per block {shift.round(3)}"


def test_atari_shapes():
    """[B, 4, 84, 84] and [T, B, 4, 84, 84] uint8 frames; leading axes are only vmapped over. (Narrow
    stages: every new weight shape costs an eager compile; the defaults are checked in shape only.)"""
    torso = NFNetTorso(ATARI.observation.shape, 32, KEY, channels=(8, 8))
    assert torso.head.weight.shape == (32, 8 * 21 * 21)  # 84 -> 42 -> 21
    obs = pixels((3, 2, 4, 84, 84))  # [T, B, C, H, W]
    out, batch = apply(torso, obs), apply(torso, obs[2])
    assert out.shape == (3, 2, 32) and batch.shape == (2, 32) and out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out))) and float(jnp.std(out)) > 0
    np.testing.assert_allclose(out[2], batch, rtol=1e-4, atol=1e-5)


def test_tiny_images_do_not_shrink_below_one_pixel():
    """A 3x3 image through three stride-2 stages: 3 -> 2 -> 1 -> 1; finite outputs."""
    torso = NFNetTorso((3, 3, 3), 16, KEY, channels=(8, 8, 8), skip_init=False)
    assert torso.head.weight.shape == (16, 8)
    out = apply(torso, pixels((5, 3, 3, 3)))
    assert out.shape == (5, 16) and bool(jnp.all(jnp.isfinite(out))) and float(jnp.std(out)) > 0


@pytest.mark.parametrize("spec, lead", [(MINIGRID, (3, 2)), (CARTPOLE, (6,))], ids=["minigrid", "cartpole"])
def test_vector_shapes(spec, lead):
    torso, features = make_torso(spec, KEY, "nfnet", (32,))
    assert isinstance(torso, NFNetTorso) and features == 32 and not torso.is_image
    dim = spec.observation.shape[0]
    obs = np.random.default_rng(0).integers(0, 122, lead + (dim,)).astype(np.float32)
    out = apply(torso, obs)
    assert out.shape == lead + (32,) and bool(jnp.all(jnp.isfinite(out))) and float(jnp.std(out)) > 0
    with pytest.raises(ValueError, match="expects observations"):
        torso(obs[..., :-1])


def test_make_torso_selects_and_rejects():
    assert "nfnet" in TORSOS
    R2D2Config(torso="nfnet").validate()
    torso, features = eqx.filter_eval_shape(make_torso, ATARI, KEY, "nfnet", (64,))  # shapes only
    assert isinstance(torso, NFNetTorso) and features == 64 and torso.is_image
    assert torso.head.weight.shape == (64, 32 * 11 * 11)  # default channels (16, 32, 32): 84 -> 42 -> 21 -> 11
    with pytest.raises(ConfigError, match="hidden_sizes"):
        make_torso(CARTPOLE, KEY, "nfnet", ())
    float_images = StepSpec(ArraySpec((4, 84, 84), "float32"), ArraySpec((), "int32"), num_actions=3)
    with pytest.raises(ConfigError, match="Unsupported observation spec"):
        make_torso(float_images, KEY, "nfnet")


def test_recurrent_network_on_nfnet_trains():
    """SGD steps on a recurrent network with the nfnet torso (MiniGrid's observations): finite gradients;
    at init (skip gains 0) the skip gains, stem and head get gradient, the branches none; after one step
    the parameters have changed and the branches get gradient too."""
    net = recurrent_network(MINIGRID, KEY, inputs=[CoreInput("prev_action", 7)], lstm_size=16,
                            heads={"q": lambda n, k: LinearHead(n, 7, k)}, torso="nfnet", hidden_sizes=(32,))
    assert isinstance(net.torso, NFNetTorso)
    obs = np.random.default_rng(0).integers(0, 122, (3, 2, 244)).astype(np.float32)
    inputs = {"prev_action": jnp.zeros((3, 2), jnp.int32)}
    is_first = jnp.zeros((3, 2), bool).at[0].set(True)

    def loss(model):
        _, heads, _ = model.unroll(obs, inputs, is_first, model.initial_state(2))
        return jnp.mean((heads["q"] - 1.0) ** 2)

    @eqx.filter_jit
    def sgd_step(model):
        grads = eqx.filter_grad(loss)(model)
        return eqx.apply_updates(model, jax.tree_util.tree_map(lambda g: -0.1 * g, grads)), grads

    def first_block(model):
        return model.torso.stages[0][1].blocks[0]

    stepped, grads = sgd_step(net)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    assert float(jnp.abs(first_block(grads).skip_gain)) > 0 and float(jnp.abs(grads.torso.stem.weight).sum()) > 0
    assert float(jnp.abs(first_block(grads).first.weight).sum()) == 0.0  # SkipInit: the branch is unused at init
    assert float(jnp.abs(stepped.torso.head.weight - net.torso.head.weight).max()) > 0
    assert float(first_block(stepped).skip_gain) != 0.0
    _, grads = sgd_step(stepped)
    assert float(jnp.abs(first_block(grads).first.weight).sum()) > 0
