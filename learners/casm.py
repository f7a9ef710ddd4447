"""CASM, RECODE's representation (Saade et al., 2023, "Unlocking the Power of Representations in
Long-term Novelty-based Exploration"): a causally masked transformer over interleaved observation and
action embeddings, trained to predict masked actions, a multi-step generalisation of NGU's inverse
dynamics (learners/inverse_dynamics.py). It fills the same role: `embed` gives the embedding the
novelty memory reads, `casm_loss(modules, ...)` trains it from a sequence batch.

What the novelty reads. e_t = f(o_t): the observation encoder's output (torso -> linear to
embedding_size), the per-step observation embedding the transformer reads, taken before the projection
to the model width, before positions and before any attention. This is what our notes on RECODE
(shared/PAPERS.md: "the novelty uses e_t = f(o_t)") say; it keeps e_t a function of o_t alone, so the
same observation always gets the same embedding whatever came before it or was masked around it, and
an actor can embed one observation without a window.

Token layout. A window of S steps gives 2S tokens [o_0, a_0, o_1, a_1, ...]: slot 2t holds o_t, slot
2t + 1 holds a_t. Per step exactly one of the two is replaced by its learned mask token, chosen by
`action_masked` [S] bool: True hides a_t (o_t is given), False hides o_t (a_t is given). Sampled, a_t
is hidden with probability `mask_probability`. A hidden input's value never enters the network: its
slot carries only the mask token (plus its position).

Which slot predicts a_t. A hidden a_t is predicted at slot 2k, the next given observation o_k
(k > t, the first later step whose action is hidden and whose observation is therefore given). Its
causal past holds o_t, the mask token in a_t's slot, the given actions a_{t+1..k-1} and o_k: for
k = t + 1 that is NGU's one-step inverse dynamics (o_t, o_{t+1} -> a_t); for k > t + 1 it is a
multi-step inverse model. Reading at a_t's own slot or at o_t's slot (both before o_{t+1} in causal
order) would see no later observation and turn the loss into behaviour cloning from history, which does
not single out what the actions control. Steps with no later given observation in the window, or whose
o_k is `context_length` or more steps on (o_t out of its attention window), or whose transitions t..k-1
are not all valid, are not trained.

Attention. Causal over tokens within a window of `context_length` steps (2·context_length tokens):
slot i attends to slot j iff i - 2·context_length < j <= i (`token_attention_mask`). Given the layout,
this proves what each prediction can read: the slots a reading slot 2k reaches, through any number of
layers, are slots <= 2k (nothing later); the only slot that ever carries a_t's value is 2t + 1, and it
holds the mask token whenever a_t is a target. Attention may cross an episode boundary inside a window
(an earlier episode's steps as context); no target spans one (`trained_targets`). The transformer is
`learners.networks.transformer.DecoderTransformer` (the shared pre-LN `AttentionBlock`s of
learners/networks/attention.py, sinusoidal positions over token index, its token table as the action
embedding, its head giving action logits), fed the interleaved embeddings and this mask.

Defaults are small and CPU-sized. Unverified: embedding_size 32 is NGU's size, not a value read from
RECODE; the widths, layers, context_length 16 and mask_probability 0.5 are our choices.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from rillet import validation as check
from rillet.datasets.specs import StepSpec
from rillet.errors import ConfigError
from rillet.learners.networks import TORSOS, LinearHead, QNetwork, make_torso
from rillet.learners.networks.attention import Dense
from rillet.learners.networks.transformer import DecoderTransformer, TransformerConfig, attention_mask
from rillet.learners.rnd import masked_mean

__all__ = ["CASMConfig", "CASM", "embed", "token_attention_mask", "given_slots", "prediction_steps",
           "sample_action_masked", "sequence_logits", "action_logits", "trained_targets", "casm_loss"]


@dataclasses.dataclass(frozen=True)
class CASMConfig:
    """Sizes of CASM. embedding_size: e_t = f(o_t) [embedding_size]; d_model, num_heads, num_layers,
    mlp_ratio: the transformer; context_length: the attention window in steps (2x in tokens);
    mask_probability: P(a_t hidden) per step, else o_t is hidden; torso, hidden_sizes: the observation
    encoder's torso (`make_torso`: "auto" is an MLP for vectors, the Nature-DQN conv torso for uint8
    images)."""

    embedding_size: int = 32  # NGU's embedding size; RECODE's own is unverified
    d_model: int = 64  # unverified (CPU-sized)
    num_heads: int = 4  # unverified
    num_layers: int = 2  # unverified
    mlp_ratio: int = 4
    context_length: int = 16  # steps; unverified
    mask_probability: float = 0.5  # unverified
    torso: str = "auto"
    hidden_sizes: tuple[int, ...] = (128,)

    def validate(self) -> "CASMConfig":
        for name in ("embedding_size", "d_model", "num_heads", "num_layers", "mlp_ratio"):
            check.integer("CASMConfig", name, getattr(self, name), low=1)
        check.integer("CASMConfig", "context_length", self.context_length, low=2)
        head = self.d_model // self.num_heads
        check.require(self.d_model % self.num_heads == 0 and head % 2 == 0, "CASMConfig", "d_model", self.d_model,
                      f"num_heads={self.num_heads} times an even head size")
        check.number("CASMConfig", "mask_probability", self.mask_probability, 0.0, 1.0, low_open=True)
        check.one_of("CASMConfig", "torso", self.torso, TORSOS)
        check.int_tuple("CASMConfig", "hidden_sizes", self.hidden_sizes, nonempty=True, low=1)
        return self


class CASM(eqx.Module):
    """encoder f: obs [..., *obs_shape] -> e [..., embedding_size] (torso -> linear, no activation);
    observation_in: e -> [..., d_model]; mask_tokens [2, d_model]: row 0 replaces a hidden o_t, row 1 a
    hidden a_t; transformer: action embedding, positions, attention blocks and the action head.
    Raises ConfigError for a spec without discrete actions or a torso that does not fit it."""

    encoder: QNetwork
    observation_in: Dense
    mask_tokens: jax.Array
    transformer: DecoderTransformer
    context_length: int = eqx.field(static=True)
    mask_probability: float = eqx.field(static=True)

    def __init__(self, spec: StepSpec, key: jax.Array, config: CASMConfig = CASMConfig()):
        cfg = config.validate()
        if spec.num_actions is None or int(spec.num_actions) < 1:
            raise ConfigError(
                f"CASM predicts discrete actions, but the spec of '{spec.env_id or 'unnamed env'}' has "
                f"num_actions={spec.num_actions}. Use an environment with discrete actions.")
        num_actions = int(spec.num_actions)
        k_torso, k_head, k_in, k_mask, k_tf = jax.random.split(key, 5)
        body, features = make_torso(spec, k_torso, cfg.torso, tuple(int(h) for h in cfg.hidden_sizes))
        self.encoder = QNetwork(body, LinearHead(features, cfg.embedding_size, k_head))
        self.observation_in = Dense(cfg.embedding_size, cfg.d_model, k_in)
        self.mask_tokens = jax.random.normal(k_mask, (2, cfg.d_model), jnp.float32)
        tf = TransformerConfig(vocab_size=num_actions, d_model=cfg.d_model, num_heads=cfg.num_heads,
                               num_layers=cfg.num_layers, mlp_ratio=cfg.mlp_ratio, num_outputs=num_actions,
                               positions="sinusoidal", window=0)  # the window is in our mask
        self.transformer = DecoderTransformer(tf, k_tf)
        self.context_length, self.mask_probability = cfg.context_length, float(cfg.mask_probability)

    @property
    def num_actions(self) -> int:
        return self.transformer.embedding.shape[0]

    def embed(self, observation: jax.Array) -> jax.Array:
        """e = f(o): observation [..., *obs] -> [..., embedding_size] float32 (the interface novelty actors
        read an embedding network through, as `InverseDynamics.embed`)."""
        return self.encoder(observation)


def embed(casm: CASM, observation: jax.Array) -> jax.Array:
    """e = f(o), the novelty's input: observation [..., *obs] -> [..., embedding_size] float32."""
    return casm.embed(observation)


def token_attention_mask(num_steps: int, context_length: int) -> jax.Array:
    """bool [2S, 2S]: True where token slot i may attend slot j: j <= i and i - j < 2·context_length."""
    return attention_mask(2 * num_steps, 2 * context_length)


def given_slots(action_masked: jax.Array) -> jax.Array:
    """action_masked [..., S] bool -> [..., 2S] bool: True where a slot carries its input (slot 2t: o_t,
    given iff a_t is hidden; slot 2t + 1: a_t, given iff o_t is hidden); False: the mask token."""
    am = jnp.asarray(action_masked, bool)
    return jnp.stack([am, ~am], axis=-1).reshape(*am.shape[:-1], 2 * am.shape[-1])


def prediction_steps(action_masked: jax.Array, context_length: int) -> tuple[jax.Array, jax.Array]:
    """Where each hidden action is predicted. action_masked [S] bool -> (reader [S] int, trained [S] bool).

    reader[t] = k, the first step k > t whose observation is given (action_masked[k]); a_t is read from
    slot 2k (S where there is none). trained[t]: a_t is hidden, k exists and k - t < context_length.
    """
    am = jnp.asarray(action_masked, bool)
    steps = am.shape[-1]
    at = jnp.where(am, jnp.arange(steps), steps)
    first_from = jax.lax.cummin(at, axis=0, reverse=True)  # first given observation at or after t
    reader = jnp.concatenate([first_from[1:], jnp.array([steps], first_from.dtype)])
    trained = am & (reader < steps) & (reader - jnp.arange(steps) < context_length)
    return reader, trained


def sample_action_masked(key: jax.Array, shape: Sequence[int], mask_probability: float) -> jax.Array:
    """bool [*shape]: True (a_t hidden, o_t given) with probability mask_probability, else o_t hidden."""
    return jax.random.bernoulli(key, mask_probability, tuple(shape))


def _tokens(casm: CASM, observation: jax.Array, action: jax.Array, action_masked: jax.Array) -> jax.Array:
    """One window: observation [S, *obs], action [S] int, action_masked [S] -> token inputs [2S, d]."""
    obs_in = casm.observation_in(embed(casm, observation))  # [S, d]
    act_in = casm.transformer.embed(jnp.clip(jnp.asarray(action, jnp.int32), 0, casm.num_actions - 1))
    am = jnp.asarray(action_masked, bool)[:, None]
    obs_in = jnp.where(am, obs_in, casm.mask_tokens[0])  # o_t hidden where a_t is given
    act_in = jnp.where(am, casm.mask_tokens[1], act_in)  # a_t hidden where o_t is given
    return jnp.stack([obs_in, act_in], axis=1).reshape(-1, obs_in.shape[-1])


def sequence_logits(casm: CASM, observation: jax.Array, action: jax.Array, action_masked: jax.Array) -> jax.Array:
    """Action logits at every token slot of one window: observation [S, *obs], action [S] int,
    action_masked [S] bool -> float32 [2S, A] (slot i depends only on the given inputs at slots <= i)."""
    tokens = _tokens(casm, observation, action, action_masked)
    mask = token_attention_mask(tokens.shape[0] // 2, casm.context_length)
    return casm.transformer(tokens, mask=mask).output


def action_logits(casm: CASM, observation: jax.Array, action: jax.Array, action_masked: jax.Array) -> jax.Array:
    """Predictions of the hidden actions of a batch of windows: observation [B, S, *obs], action [B, S]
    int, action_masked [B, S] bool -> logits [B, S, A] float32, row t read at slot 2·reader[t] (see
    `prediction_steps`; a row without a reader holds the last slot's logits)."""
    def one(obs, act, am):
        logits = sequence_logits(casm, obs, act, am)
        reader = prediction_steps(am, casm.context_length)[0]
        return logits[jnp.minimum(2 * reader, logits.shape[0] - 1)]

    return jax.vmap(one)(observation, action, action_masked)


def trained_targets(action_masked: jax.Array, valid: jax.Array, context_length: int) -> jax.Array:
    """action_masked [B, S], valid [B, S-1] (transition t real and within one episode) -> [B, S] bool:
    a_t is trained (`prediction_steps`) and transitions t .. reader[t] - 1 are all valid."""
    reader, trained = jax.vmap(lambda am: prediction_steps(am, context_length))(action_masked)
    invalid = jnp.cumsum(~jnp.asarray(valid, bool), axis=-1)
    before = jnp.concatenate([jnp.zeros_like(invalid[:, :1]), invalid], axis=-1)  # [B, S]: invalid in 0..t-1
    upto_reader = jnp.take_along_axis(before, jnp.minimum(reader, before.shape[-1] - 1), axis=-1)
    return trained & (upto_reader == before)


def casm_loss(modules: dict, observation: jax.Array, action: jax.Array, valid: jax.Array, key: jax.Array,
              action_masked: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Softmax cross-entropy of the hidden actions, averaged over the trained, valid ones.

    modules: {"embedding": CASM}. A window of S = T + 1 steps: observation [B, S, *obs], action [B, S]
    int (a_{S-1} is never a target; padding may hold any action); valid [B, S-1] bool: transition t
    (o_t, a_t, o_{t+1}) is real and within one episode (NGU's `transition_mask` over T = S - 1 steps, as
    its `_next_observations` gives, unflattened). key draws action_masked [B, S] when it is None.
    a_t counts iff it is hidden, has a reader k (`prediction_steps`) and transitions t..k-1 are valid.
    Returns (loss [], {"accuracy": [] fraction of counted actions whose argmax logit is a_t,
    "targets": [] how many counted}).
    """
    casm = modules["embedding"]
    observation, action = jnp.asarray(observation), jnp.asarray(action, jnp.int32)
    batch, steps = action.shape
    if jnp.shape(valid) != (batch, steps - 1):
        raise ValueError(f"casm_loss: valid must be [B, S-1] = {(batch, steps - 1)} for action {action.shape}, "
                         f"got {jnp.shape(valid)}: one flag per transition (o_t, a_t, o_t+1) of the window.")
    if action_masked is None:
        action_masked = sample_action_masked(key, (batch, steps), casm.mask_probability)
    logits = action_logits(casm, observation, action, action_masked)
    counted = trained_targets(action_masked, valid, casm.context_length).reshape(-1)
    logits, target = logits.reshape(batch * steps, -1), jnp.where(counted, action.reshape(-1), 0)
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, target)
    correct = (jnp.argmax(logits, axis=-1) == target).astype(jnp.float32)
    aux = {"accuracy": masked_mean(correct, counted), "targets": jnp.sum(counted)}
    return masked_mean(cross_entropy, counted), aux
