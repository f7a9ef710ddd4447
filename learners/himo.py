"""HiMo (Guez et al., NeurIPS 2020, "Value-driven Hindsight Modelling") on the recurrent value core: R2D2's
network, burn-in unroll and sequence targets with HiMo's heads over the core's features h_t
(`networks.hindsight`) and HiMo's loss

    L = L_q(q_m) + alpha * L_q+(q+) + beta * L_model,   L_model = ||sg phi(sg h_{t+k}) - phi_hat(h_t)||^2,
    q+(h_t, .)  = psi(sg h_t, phi(sg h_{t+k}))   (hindsight value: reads the future through phi, [.., A])
    q_m(h_t, .) = psi'(h_t, sg phi_hat(h_t))     (acted on and bootstrapped from, head "q")

Both value heads learn from the same target: R2D2's transformed n-step (or other estimator's) target G_t
from the target network's q_m, through `r2d2.sequence_td`; only the taken action's entry is trained.

Q form. HiMo is stated with state values v (v+, v^m; PAPERS.md), and PAPERS.md does not say how its R2D2
agent turns them into action values. R2D2 is a Q-learner: it acts greedily on Q and bootstraps from
Q(x_{t+n}, argmax_a Q_online), so the value it uses must be over actions. Each v becomes a Q head over
actions [.., A]: v^m -> q_m(h_t, a) and v+ -> q+(h_t, a), both trained on Q(x_t, a_t) against G_t (the
TD loss of the host). phi and phi_hat stay action-free: phi summarises the future that followed a_t (so
q+ is the value of the taken action given that future), and phi_hat(h_t) predicts that summary under the
behaviour's action at x_t, as v^m's model does in the paper; q_m reads the prediction for every action.
This mapping is this library's reading.

Sequences. A batch holds L = burn_in + trace_length + n_step + lookahead steps (`HiMoConfig.sequence_length`),
so that each of the trace_length trained steps t (steps burn_in .. burn_in + T - 1) has n + k steps after
it: the value targets are computed over every step after the burn-in (R2D2's estimator over a trace of
W = T + n + k - 1 transitions, bootstrapping at the last step) and kept for the first T, so no trained
step's n-step target is cut by the sequence's end (only by its episode's); phi for step t reads h_{t+k}.
The hindsight and model losses drop step t when t + k is past its episode's end or the sequence's mask.
Padding and masks at episode ends are R2D2's (the replay writer pads with mask False).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp

from rillet import validation as check
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.learners import optim, r2d2, recurrent_value, sequence_targets
from rillet.learners.networks.hindsight import HindsightHead, ModelledValueHead
from rillet.learners.networks.recurrent import RecurrentNetwork, recurrent_network
from rillet.learners.target_network import update_target
from rillet.learners.value_state import ValueState, init_value_state

__all__ = ["HiMoConfig", "init", "update", "spec_extras", "build_network", "unroll", "hindsight_mask",
           "loss_terms", "sequence_loss", "LOSS_TERMS"]

LOSS_TERMS = ("q_loss", "hindsight_loss", "model_loss")


@dataclasses.dataclass(frozen=True)
class HiMoConfig(r2d2.R2D2Config):
    """R2D2's options plus HiMo's. Defaults (hindsight_size 3, lookahead 5, alpha 1, beta 1, hindsight_hidden
    64) are this library's choice: PAPERS.md gives none. MEME's parts are not composed (validate says so)."""

    hindsight_size: int = 3
    """d: the size of the hindsight feature phi (the paper keeps it low so that q+ cannot read the return)."""
    lookahead: int = 5
    """k: phi for step t reads the core's features at step t + k."""
    alpha: float = 1.0
    """The weight of the hindsight value's TD loss L_q+."""
    beta: float = 1.0
    """The weight of the model loss ||sg phi - phi_hat||^2."""
    hindsight_hidden: int = 64
    """Hidden units of phi, phi_hat, psi and psi' (`networks.hindsight`)."""

    @property
    def sequence_length(self) -> int:
        """L = burn_in + trace_length + n_step + lookahead: every trained step has n + k steps after it."""
        return self.burn_in + self.trace_length + self.n_step + self.lookahead

    def sequence_layout(self) -> str:
        return (f"burn_in={self.burn_in} + trace_length={self.trace_length} + n_step={self.n_step} + "
                f"lookahead={self.lookahead}")

    def value_window(self) -> "HiMoConfig":
        """This config with trace_length W = L - burn_in - 1: the host's (R2D2's) targets over all the steps
        after the burn-in, of which the first trace_length are trained."""
        return dataclasses.replace(self, trace_length=self.sequence_length - self.burn_in - 1)

    def validate(self) -> "HiMoConfig":
        """R2D2's checks, HiMo's sizes (d, k, hidden >= 1) and weights (alpha, beta >= 0), MEME's parts off."""
        super().validate()
        owner = "HiMoConfig"
        check.integer(owner, "hindsight_size", self.hindsight_size, low=1, fix="hindsight_size >= 1 (e.g. 3)")
        check.integer(owner, "lookahead", self.lookahead, low=1, fix="lookahead >= 1 (e.g. 5)")
        check.integer(owner, "hindsight_hidden", self.hindsight_hidden, low=1)
        for name in ("alpha", "beta"):
            check.number(owner, name, getattr(self, name), 0.0, fix=f"{name} >= 0 (0 switches its loss off)")
        for name in ("trust_region", "normalise_td", "distillation", "measure_churn"):
            check.require(not getattr(self, name), owner, name, getattr(self, name), "is not composed with HiMo",
                          fix=f"{name}=False")
        return self


def build_network(spec: StepSpec, config: HiMoConfig, key: jax.Array) -> RecurrentNetwork:
    """R2D2's core (torso, LSTM, previous action and reward) with heads "q" (q_m, `ModelledValueHead`) and
    "phi" (phi and psi, `HindsightHead`)."""
    actions = r2d2.check_discrete_actions(spec)
    sizes = (config.hindsight_size, config.hindsight_hidden, actions, config.dueling)
    return recurrent_network(spec, key, inputs=r2d2.core_inputs(spec, config), lstm_size=config.lstm_size,
                             heads={"q": lambda size, k: ModelledValueHead(size, *sizes, k),
                                    "phi": lambda size, k: HindsightHead(size, *sizes, k)},
                             torso=config.torso, hidden_sizes=config.hidden_sizes)


def spec_extras(spec: StepSpec, config: HiMoConfig) -> StepSpec:
    """What R2D2's actors record (`r2d2.spec_extras`) and the actor's policy index (epsilon ladder)."""
    return r2d2.spec_extras(spec, config).with_extras(policy_index=ArraySpec((), "int32"))


def init(key: jax.Array, spec: StepSpec, config: HiMoConfig) -> ValueState:
    """Validates `config`; online = target network, Adam state (R2D2's one group "q"), steps = 0."""
    config.validate()
    return init_value_state(key, lambda k: build_network(spec, config, k), r2d2.optimizers(config))


def unroll(online: RecurrentNetwork, target: RecurrentNetwork, batch: Mapping[str, Any], config: HiMoConfig):
    """Checks the sequence length, then the burn-in unroll: (features h [B, W+1, H], online heads, target
    heads), heads {name: [B, W+1, ...]} over the steps after the burn-in (W = L - burn_in - 1)."""
    r2d2.check_sequence_length(batch, config)
    features, online_heads = recurrent_value.online_unroll_features(online, batch, config.burn_in, config.scan_unroll)
    return features, online_heads, recurrent_value.target_unroll(target, batch, config.burn_in, config.scan_unroll)


def hindsight_mask(batch: Mapping[str, Any], burn_in: int, trace_length: int, lookahead: int) -> jax.Array:
    """[B, T] bool: step t's look-ahead step t + k is real (mask) and in t's episode (no is_last in
    t .. t+k-1, no is_first in t+1 .. t+k); steps t = burn_in .. burn_in + T - 1 of the sequence."""
    mask, first, last = (jnp.asarray(batch[k], bool) for k in ("mask", "is_first", "is_last"))
    t0, T, k = burn_in, trace_length, lookahead
    keep = mask[:, t0 + k:t0 + k + T]
    for j in range(k):
        keep = keep & ~last[:, t0 + j:t0 + j + T] & ~first[:, t0 + j + 1:t0 + j + 1 + T]
    return keep


def _taken(q: jax.Array, actions: jax.Array) -> jax.Array:
    """q [B, T, A], actions [B, T] -> q[b, t, a_t] [B, T]."""
    return jnp.take_along_axis(q, actions[..., None], axis=-1)[..., 0]


def loss_terms(online: RecurrentNetwork, target: RecurrentNetwork, batch: Mapping[str, Any], config: HiMoConfig):
    """HiMo's three losses over the T trained steps: ({"q_loss", "hindsight_loss", "model_loss"} each [],
    aux). L_q and L_q+ are `sequence_targets.td_loss` (0.5 * td^2, importance-weighted) of q_m and q+
    against the same target G_t; L_model is the weighted mean of ||sg phi_{t+k} - phi_hat_t||^2. aux: td,
    valid, q_taken [B, T] of q_m (R2D2's, for priorities and metrics), hindsight_valid [B, T], phi,
    phi_hat [B, T, d], hindsight_q [B, T] (q+ of the taken action)."""
    T, k, bi = config.trace_length, config.lookahead, config.burn_in
    features, online_heads, target_heads = unroll(online, target, batch, config)
    pi = sequence_targets.target_policy(online_heads["q"], config.target_epsilon)
    td, valid, q_taken, _ = r2d2.sequence_td(online_heads["q"], target_heads["q"], pi, batch, config.value_window())
    td, valid, q_taken = td[:, :T], valid[:, :T], q_taken[:, :T]
    target_g = jax.lax.stop_gradient(td + q_taken)  # G_t on valid steps
    phi = online_heads["phi"][:, k:k + T]  # phi(sg h_{t+k}) [B, T, d]
    q_plus = online.heads["phi"].values(features[:, :T], phi)  # psi(sg h_t, phi) [B, T, A]
    phi_hat = online.heads["q"].predict(features[:, :T])  # [B, T, d]
    hindsight = valid & hindsight_mask(batch, bi, T, k)
    hindsight_q = _taken(q_plus, jnp.asarray(batch["action"], jnp.int32)[:, bi:bi + T])
    td_plus = jnp.where(hindsight, target_g - hindsight_q, 0.0)
    model_sq = jnp.sum(jnp.square(jax.lax.stop_gradient(phi) - phi_hat), axis=-1)
    weights = batch.get("weights")
    terms = {"q_loss": sequence_targets.td_loss(td, valid, weights),
             "hindsight_loss": sequence_targets.td_loss(td_plus, hindsight, weights),
             "model_loss": sequence_targets.sequence_mean(model_sq, hindsight, weights)}
    aux = {"td": td, "valid": valid, "q_taken": q_taken, "hindsight_valid": hindsight, "phi": phi,
           "phi_hat": phi_hat, "hindsight_q": hindsight_q}
    return terms, aux


def sequence_loss(online: RecurrentNetwork, target: RecurrentNetwork, batch: Mapping[str, Any], config: HiMoConfig):
    """L = L_q + alpha * L_q+ + beta * L_model -> (loss [], aux with `loss_terms`' aux and terms)."""
    terms, aux = loss_terms(online, target, batch, config)
    loss = terms["q_loss"] + config.alpha * terms["hindsight_loss"] + config.beta * terms["model_loss"]
    return loss, {**aux, **terms}


def model_metrics(aux: Mapping[str, jax.Array]) -> dict:
    """model_error: ||phi - phi_hat||^2 / ||phi - mean phi||^2 over the hindsight steps (0: a perfect model,
    1: no better than phi's batch mean); hindsight_mean_q: mean q+ of the taken action; hindsight_steps."""
    keep = aux["hindsight_valid"][..., None]
    n = jnp.maximum(jnp.sum(aux["hindsight_valid"]), 1)
    phi = jax.lax.stop_gradient(aux["phi"])
    mean = jnp.sum(jnp.where(keep, phi, 0.0), axis=(0, 1)) / n
    spread = jnp.sum(jnp.where(keep, jnp.square(phi - mean), 0.0))
    error = jnp.sum(jnp.where(keep, jnp.square(phi - aux["phi_hat"]), 0.0))
    return {"model_error": error / jnp.maximum(spread, 1e-8),
            "hindsight_mean_q": jnp.sum(jnp.where(aux["hindsight_valid"], aux["hindsight_q"], 0.0)) / n,
            "hindsight_steps": jnp.sum(aux["hindsight_valid"])}


@eqx.filter_jit
def update(state: ValueState, batch: Mapping[str, Any], config: HiMoConfig):
    """One Adam step of the core and every head on `sequence_loss`. Metrics: R2D2's (`r2d2.value_metrics`:
    loss, mean_q and priorities of q_m, grad_norm, valid_steps), each loss term (LOSS_TERMS) and
    `model_metrics`. The target is a hard copy every target_update_period updates."""
    def loss_fn(modules, target, batch):
        return sequence_loss(modules["q"], target, batch, config)

    modules, opt_state, (loss, aux), norms = optim.group_step(
        loss_fn, r2d2.optimizers(config), {"q": state.online}, state.opt_state, state.target, batch)
    online, steps = modules["q"], state.steps + 1
    metrics = {**r2d2.value_metrics(loss, aux, norms["q"], config.priority_eta),
               **{name: aux[name] for name in LOSS_TERMS}, **model_metrics(aux)}
    target = update_target(online, state.target, steps, config.target_update_period)
    return ValueState(online=online, target=target, opt_state=opt_state, steps=steps, key=state.key), metrics
