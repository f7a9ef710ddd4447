"""TD3 (Fujimoto et al., 2018) with multi-step critic targets over replayed sequences: a deterministic
tanh actor, twin critics (the minimum of the two target critics bootstraps), target networks moved by
Polyak averaging, target policy smoothing (clipped Gaussian noise on the target actor's action) and
actor and target updates every `policy_delay` critic updates. The critic target is one of
`continuous_targets.CONTINUOUS_ESTIMATORS` (n-step, Peng's Q(lambda), Retrace, tree-backup; Kozuno et
al., 2021 plug them into TD3); with trace_length 1 and "nstep" it is TD3's one-step target.

A batch is B sequences of L = trace_length + 1 RLDS steps (batch-major), as the sequence writer stores
them:

    observation [B, L, D] float, action [B, L, A] float in [-1, 1], reward, discount [B, L] (env
    discount), is_first, is_last, mask [B, L] bool, extras {"behaviour_log_prob": [B, L] log mu(a_t|x_t)},
    optional weights [B] (importance weights).

All T = L - 1 transitions are learned; transition t is valid iff its step is real, not an episode's
last, and the next step does not start another episode (`recurrent_value.transition_mask`).
Pure functions over an Equinox state pytree: `init(key, spec, config) -> TD3State`,
`update(state, batch, config) -> (state, metrics)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet import validation as check
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError
from rillet.learners import continuous_targets, optim, sequence_targets
from rillet.learners.networks import MLP
from rillet.learners.networks.ensemble import ensemble
from rillet.learners.recurrent_value import transition_mask
from rillet.learners.target_network import update_target

__all__ = ["TD3Config", "TD3State", "init", "update", "policy_action", "critic_values", "critic_targets",
           "smoothed_target_action", "spec_extras", "check_continuous_actions", "optimizers"]

NUM_CRITICS = 2


@dataclasses.dataclass(frozen=True)
class TD3Config:
    """TD3's hyper-parameters. From the TD3 paper (Fujimoto et al., 2018; its published code's values):
    Adam 3e-4 for actor and critics, tau 0.005, target smoothing noise 0.2 clipped to 0.5, exploration
    noise 0.1, actor delay 2, hidden (256, 256), 10k uniformly random warm-up steps, gamma 0.99.
    This library's choices (not from a paper, unverified): trace_length 5, n_step 5 and lambda 0.9
    for the multi-step estimators (PAPERS.md does not record Kozuno et al.'s values). On a CPU,
    hidden_sizes (64, 64) and a few thousand warm-up steps make short runs cheaper.

    Replay writes a sequence every --replay.sequence-period steps; keep it <= trace_length so that every
    step is learned from (a longer period skips the steps in between). The td3 record's replay options
    (`agents.td3.replay_options`: period trace_length, about one update per env step) are where
    `rillet train-online td3` starts.
    """

    estimator: str = "nstep"
    """One of continuous_targets.CONTINUOUS_ESTIMATORS: nstep, peng, retrace, tree_backup."""
    trace_length: int = 5
    """T: transitions per replayed sequence (sequences of T + 1 steps); the trace estimators run to its end."""
    n_step: int = 5
    """n of "nstep" and Peng's truncation (>= trace_length: to the sequence end)."""
    lambda_: float = 0.9
    gamma: float = 0.99
    learning_rate: float = 3e-4
    adam_eps: float = 1e-8
    max_grad_norm: float | None = None
    """Clip each network's gradient to this global norm (None: no clipping, as TD3)."""
    tau: float = 0.005
    """Polyak rate of the target networks, moved with each actor update."""
    policy_noise: float = 0.2
    """sigma_s: standard deviation of the target policy smoothing noise (in [-1, 1] action units)."""
    noise_clip: float = 0.5
    exploration_noise: float = 0.1
    """sigma_b: standard deviation of the actors' Gaussian exploration noise."""
    policy_delay: int = 2
    """Actor and target updates every this many critic updates."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    warmup_steps: int = 10_000
    """Env steps (summed over the actors) of uniformly random actions before the actor acts."""

    def __post_init__(self):
        if isinstance(self.hidden_sizes, list):  # e.g. from JSON / CLI; keep the config hashable
            object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))

    @property
    def sequence_length(self) -> int:
        """L = trace_length + 1 (the last step only bootstraps)."""
        return self.trace_length + 1

    def validate(self) -> "TD3Config":
        """Raises ConfigError naming the first bad field; returns self."""
        owner = "TD3Config"
        continuous_targets.check_continuous_estimator(self.estimator)
        for name in ("trace_length", "n_step", "policy_delay"):
            check.integer(owner, name, getattr(self, name), low=1, fix=check.cli_option(f"td3.{name}"))
        check.integer(owner, "warmup_steps", self.warmup_steps, low=0, fix="--td3.warmup-steps (0: none)")
        for name in ("lambda_", "gamma"):
            check.number(owner, name, getattr(self, name), 0.0, 1.0)
        check.number(owner, "tau", self.tau, 0.0, 1.0, low_open=True, fix="--td3.tau (e.g. 0.005)")
        for name in ("learning_rate", "adam_eps", "policy_noise", "exploration_noise"):
            check.number(owner, name, getattr(self, name), 0.0, low_open=True, fix=check.cli_option(f"td3.{name}"))
        check.number(owner, "noise_clip", self.noise_clip, 0.0, fix="--td3.noise-clip (e.g. 0.5)")
        if self.max_grad_norm is not None:
            check.number(owner, "max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        check.int_tuple(owner, "hidden_sizes", self.hidden_sizes, nonempty=True, low=1,
                        fix="--td3.hidden-sizes, e.g. 256 256")
        return self


class TD3State(eqx.Module):
    """actor: MLP [.., D] -> pre-tanh actions [.., A]; critic: an `Ensemble` of NUM_CRITICS MLPs
    [.., D + A] -> [.., 1]; their Polyak targets; opt_state {"actor", "critic"}; steps int32 [] (critic
    updates done); key uint32 [2] (the smoothing noise)."""

    actor: eqx.Module
    critic: eqx.Module
    target_actor: eqx.Module
    target_critic: eqx.Module
    opt_state: dict
    steps: jax.Array
    key: jax.Array


def optimizers(config: TD3Config) -> dict:
    """Two parameter groups, each Adam (after global-norm clipping when max_grad_norm is set)."""
    opt = optim.adam(config.learning_rate, config.adam_eps, config.max_grad_norm)
    return {"actor": opt, "critic": opt}


def check_continuous_actions(spec: StepSpec) -> tuple[int, int]:
    """(observation size D, action size A); ConfigError unless vector observations and continuous
    vector actions."""
    obs, act = spec.observation, spec.action
    if spec.num_actions is not None or len(act.shape) != 1 or not np.issubdtype(act.np_dtype, np.floating):
        raise ConfigError(f"TD3 needs continuous vector actions [A] in [-1, 1], but '{spec.env_id or 'the env'}' "
                          f"has action spec {act.shape} {act.dtype} (num_actions={spec.num_actions}). Use a "
                          "continuous-control task (e.g. Pendulum-v1, CheetahRun-v1) or a discrete agent (dqn).")
    if len(obs.shape) != 1:
        raise ConfigError(f"TD3 takes vector observations [D], got {obs.shape} {obs.dtype} from "
                          f"'{spec.env_id or 'the env'}'. Flatten them or pick a state-based task.")
    return int(obs.shape[0]), int(act.shape[0])


def init(key: jax.Array, spec: StepSpec, config: TD3Config) -> TD3State:
    """Validates `config` and the spec; online = target networks, Adam states, steps = 0."""
    config.validate()
    obs_size, action_size = check_continuous_actions(spec)
    network_key, state_key = jax.random.split(optim.key_data(key))
    modules = _networks(network_key, obs_size, action_size, config.hidden_sizes)
    actor, critic = modules["actor"], modules["critic"]
    return TD3State(actor=actor, critic=critic, target_actor=actor, target_critic=critic,
                    opt_state=optim.init_groups(optimizers(config), modules), steps=jnp.zeros((), jnp.int32),
                    key=state_key)


@eqx.filter_jit
def _networks(key: jax.Array, obs_size: int, action_size: int, hidden_sizes: tuple[int, ...]) -> dict:
    """{"actor": MLP [D] -> [A], "critic": NUM_CRITICS stacked MLPs [D + A] -> [1]}, built in one compiled
    call (eagerly, each initialiser op would compile on its own)."""
    actor_key, critic_key = jax.random.split(key)
    critic = ensemble(lambda k: MLP(obs_size + action_size, hidden_sizes, 1, k), critic_key, NUM_CRITICS)
    return {"actor": MLP(obs_size, hidden_sizes, action_size, actor_key), "critic": critic}


def policy_action(actor: eqx.Module, observation: jax.Array) -> jax.Array:
    """The deterministic policy tanh(actor(x)): observation [..., D] -> action [..., A] in [-1, 1]."""
    return jnp.tanh(actor(jnp.asarray(observation, jnp.float32)))


def critic_values(critic: eqx.Module, observation: jax.Array, action: jax.Array) -> jax.Array:
    """Each twin's Q(x, a): observation [..., D], action [..., A] -> [NUM_CRITICS, ...]."""
    inputs = jnp.concatenate([jnp.asarray(observation, jnp.float32), jnp.asarray(action, jnp.float32)], axis=-1)
    return critic.members(inputs)[..., 0]


def smoothed_target_action(target_actor: eqx.Module, observation: jax.Array, key: jax.Array,
                           config: TD3Config) -> tuple[jax.Array, jax.Array]:
    """(pi'(x) [..., A], clip(pi'(x) + clip(eps, -c, c), -1, 1) [..., A]) with eps ~ N(0, policy_noise^2 I),
    c = noise_clip: the target actor's action and TD3's smoothed target action."""
    mean = policy_action(target_actor, observation)
    noise = jnp.clip(config.policy_noise * jax.random.normal(key, mean.shape), -config.noise_clip, config.noise_clip)
    return mean, jnp.clip(mean + noise, -1.0, 1.0)


def critic_targets(state: TD3State, batch: Mapping[str, Any], key: jax.Array, config: TD3Config):
    """(G [B, T], valid [B, T], traces [B, T+1]): config.estimator's targets from the target networks,
    E_pi Q = min over the twins of Q'(x, smoothed pi'(x)), Q(x, a_t) = min over the twins of Q'(x, a_t)
    (`continuous_targets`). No gradient."""
    T = config.trace_length
    obs = jnp.asarray(batch["observation"], jnp.float32)  # [B, T+1, D]
    action = jnp.asarray(batch["action"], jnp.float32)  # [B, T+1, A]
    target_action, smoothed = smoothed_target_action(state.target_actor, obs, key, config)
    v = jnp.min(critic_values(state.target_critic, obs, smoothed), axis=0)  # [B, T+1]
    q_taken = jnp.min(critic_values(state.target_critic, obs, action), axis=0)
    traces = continuous_targets.trace_coefficients(
        config.estimator, action, target_action, batch["extras"]["behaviour_log_prob"], lambda_=config.lambda_,
        smoothing_std=config.policy_noise)
    valid = transition_mask(batch, 0, T)
    discount = sequence_targets.sequence_discounts(batch["discount"][:, :T], config.gamma)
    reward = jnp.asarray(batch["reward"], jnp.float32)[:, :T]
    g = continuous_targets.continuous_targets(config.estimator, q_taken, v, reward, discount, valid, traces,
                                              lambda_=config.lambda_, n=config.n_step)
    return g, valid, jax.lax.stop_gradient(traces)


def _critic_loss(modules, batch, g, valid, config: TD3Config):
    """sum over the twins of td_loss(Q_k(x_t, a_t) - G_t): the twins' mean squared error / 2."""
    T = config.trace_length
    q = critic_values(modules["critic"], batch["observation"][:, :T], batch["action"][:, :T])  # [2, B, T]
    weights = batch.get("weights")
    loss = sum(sequence_targets.td_loss(q[k] - g, valid, weights) for k in range(NUM_CRITICS))
    mean_q = jnp.sum(jnp.where(valid, q[0], 0.0)) / jnp.maximum(jnp.sum(valid), 1)
    return loss, {"mean_q": mean_q}


def _actor_loss(modules, critic, batch, valid, config: TD3Config):
    """-mean over the valid transitions' states of Q_1(x_t, pi(x_t)) (the first twin, as TD3)."""
    obs = batch["observation"][:, :config.trace_length]
    q = critic_values(critic, obs, policy_action(modules["actor"], obs))[0]  # [B, T]
    return -sequence_targets.sequence_mean(q, valid), {}


def _actor_and_targets(state: TD3State, critic, batch, valid, config: TD3Config):
    """One actor step against `critic` and the Polyak moves of both targets:
    (actor, target_actor, target_critic, actor opt_state, actor loss [])."""
    modules, opt, (loss, _), _ = optim.group_step(
        _actor_loss, {"actor": optimizers(config)["actor"]}, {"actor": state.actor},
        {"actor": state.opt_state["actor"]}, jax.lax.stop_gradient(critic), batch, valid, config)
    actor = modules["actor"]
    target_actor = update_target(actor, state.target_actor, state.steps, 1, config.tau)
    target_critic = update_target(critic, state.target_critic, state.steps, 1, config.tau)
    return actor, target_actor, target_critic, opt["actor"], loss


@eqx.filter_jit
def update(state: TD3State, batch: Mapping[str, Any], config: TD3Config):
    """One critic step on the twins' loss towards `critic_targets`; every policy_delay-th update (the new
    step count a multiple of it, as TD3 counts) also one actor step and the targets' Polyak moves.

    Returns (new_state, metrics): loss [] (= critic_loss), critic_loss, actor_loss [] (0 on updates
    without an actor step), actor_updated [] (1.0 or 0.0), mean_q [] (first twin's Q(x_t, a_t) over valid
    steps), target_mean [] (mean G), trace_mean [] (mean c_{t+1} over valid transitions), grad_norm []
    (critic, before clipping), valid_steps []."""
    key, noise_key = jax.random.split(state.key)
    g, valid, traces = critic_targets(state, batch, noise_key, config)
    modules, critic_opt, (loss, aux), norms = optim.group_step(
        _critic_loss, {"critic": optimizers(config)["critic"]}, {"critic": state.critic},
        {"critic": state.opt_state["critic"]}, batch, g, valid, config)
    critic, steps = modules["critic"], state.steps + 1
    kept = (state.actor, state.target_actor, state.target_critic, state.opt_state["actor"])
    arrays, static = eqx.partition(kept, eqx.is_array)

    def step_actor(_):
        *out, actor_loss = _actor_and_targets(state, critic, batch, valid, config)
        return eqx.filter(tuple(out), eqx.is_array), actor_loss

    def skip(_):
        return arrays, jnp.zeros((), jnp.float32)

    do_actor = steps % config.policy_delay == 0
    new_arrays, actor_loss = jax.lax.cond(do_actor, step_actor, skip, None)
    actor, target_actor, target_critic, actor_opt = eqx.combine(new_arrays, static)
    n_valid = jnp.sum(valid)
    metrics = {"loss": loss, "critic_loss": loss, "actor_loss": actor_loss,
               "actor_updated": do_actor.astype(jnp.float32), "mean_q": aux["mean_q"],
               "target_mean": jnp.sum(jnp.where(valid, g, 0.0)) / jnp.maximum(n_valid, 1),
               "trace_mean": jnp.sum(jnp.where(valid, traces[:, 1:], 0.0)) / jnp.maximum(n_valid, 1),
               "grad_norm": norms["critic"], "valid_steps": n_valid}
    new_state = TD3State(actor=actor, critic=critic, target_actor=target_actor, target_critic=target_critic,
                         opt_state={"actor": actor_opt, "critic": critic_opt["critic"]}, steps=steps, key=key)
    return new_state, metrics


def spec_extras(spec: StepSpec, config: TD3Config) -> StepSpec:
    """`spec` plus what TD3's actors record: behaviour_log_prob [] float32, log mu(a_t|x_t) of the taken
    action (Retrace's density ratio reads it)."""
    return spec.with_extras(behaviour_log_prob=ArraySpec((), "float32"))
