"""Offline Perceiver actor-critic (PAC; Springenberg et al., ICML 2024), multi-task, data parallel.

Per sample the loss is (1 - alpha) KL(pi_imp || pi) + alpha KL(b || pi) + beta KL(Gamma' || p):
pi_imp ∝ pi'(a|s) exp(Q'(s, a) / eta) is represented by M actions sampled from the target policy pi'
with self-normalised weights softmax(Q'/eta); b is the dataset action (alpha = 1: behaviour cloning);
Gamma' is the categorical projection of r + discount * z, z ~ p'(.|s', a'), a' ~ pi'(s') (M samples,
mixture of their distributions). Continuous actions in [-1, 1] are discretised per dim into K bins.

Batch (one row per transition, tasks padded to obs_max = max obs size, D_max = max action size):

    observation      [B, obs_max] f32   entries past the task's obs size are ignored (may be anything)
    next_observation [B, obs_max] f32
    task_id          [B] int32          index into `task_specs`
    action           [B, D_max] f32     in [-1, 1]; entries past the task's action size are ignored
    reward           [B] f32
    discount         [B] f32            gamma * (1 - terminal); use gamma**n for n-step rewards
    image, next_image [B, C, H, W] uint8  only with PerceiverConfig.image_shape
    obs_mask [B, obs_max], action_mask [B, D_max] bool   optional, ANDed with the task-derived masks

Temperature: a fixed eta is brittle because the spread of Q over sampled actions changes by orders
of magnitude across tasks and during training (with eta = 1 and a young critic the weights stayed
uniform and the policy never moved). By default eta is therefore learned as in MPO (Abdolmaleki et
al., 2018): eta minimises the dual  eta * epsilon + eta * mean_s log mean_j exp(Q'(s, a_j) / eta),
so KL(pi_imp || pi') stays near epsilon = kl_epsilon whatever the Q scale. There is one eta per task
(as in multi-task MPO): the spread of Q over sampled actions differs between tasks too, and one shared
eta set by the widest spread leaves the weights of the other tasks near uniform. `learn_temperature=False`
keeps eta fixed at `eta` for all tasks; `eta` is also every learned temperature's initial value.

Defaults (the paper does not fix all of them): K = 21 bins (0.1 resolution, 0 is a bin centre);
C = 101 atoms on [-100, 100] (returns of |r| <= 1 rewards at gamma = 0.99); eta learned from 1.0
with kl_epsilon = 0.1 (MPO's E-step bound; offline training uses 0.01, see OfflineConfig) and its
own Adam at 1e-2; M = 16 samples (the critic decoder is cheap); alpha = 0.75 (mostly BC, as for
mixed-quality data); beta = 1.0 (KL terms are on comparable nat scales); Polyak tau = 0.005 (or hard
copies).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rillet.datasets.specs import StepSpec
from rillet import validation as check
from rillet.errors import SpecMismatchError
from rillet.learners import optim, value_ops
from rillet.learners.networks import perceiver
from rillet.learners.target_network import update_target

__all__ = ["PACConfig", "PACState", "init", "update", "improvement_weights", "temperature_dual",
           "categorical_projection", "policy_loss", "critic_loss", "actions_to_bins", "bins_to_actions",
           "make_mesh", "shard_batch", "replicate", "task_sizes", "learning_rate_schedule", "COMPUTE_DTYPES"]

COMPUTE_DTYPES = ("float32", "bfloat16")  # bfloat16: bf16 compute over float32 master weights


@dataclasses.dataclass(frozen=True)
class PACConfig:
    """PAC hyper-parameters (see the module docstring for the reasons behind the defaults)."""

    alpha: float = 0.75  # weight of behaviour cloning; 1 - alpha on the policy-improvement KL
    beta: float = 1.0  # weight of the critic's distributional TD KL
    eta: float = 1.0  # temperature of the improvement weights softmax(Q / eta): fixed, or the initial value
    learn_temperature: bool = True  # learn eta by the MPO dual (see the module docstring)
    kl_epsilon: float = 0.1  # the dual's bound on KL(pi_imp || pi')
    dual_learning_rate: float = 1e-2
    num_action_samples: int = 16  # M: target-policy samples per state (improvement and TD target)
    gamma: float = 0.99  # documentation only: the batch's "discount" already holds gamma * (1 - done)
    num_bins: int = 21  # K per action dimension
    num_atoms: int = 101  # C
    v_min: float = -100.0
    v_max: float = 100.0
    learning_rate: float = 1e-4
    learning_rate_decay_steps: int = 0  # > 0: cosine decay to 10% over this many updates (0: constant)
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    target_update_period: int = 100  # hard copy every this many updates (ignored with Polyak)
    target_polyak_tau: float | None = 0.005
    compute_dtype: str = "float32"  # or "bfloat16": bf16 compute, float32 master weights
    attention: str | None = None  # "cudnn": cuDNN fused self-attention on NVIDIA GPUs (bfloat16 compute)
    network: str | perceiver.PerceiverConfig = "xs"

    def validate(self) -> "PACConfig":
        """Raises ConfigError naming the first bad field; returns self."""
        owner, inf = "PACConfig", math.inf
        check.number(owner, "alpha", self.alpha, 0.0, 1.0)
        check.number(owner, "beta", self.beta, 0.0)
        check.number(owner, "gamma", self.gamma, 0.0, 1.0)
        for name in ("eta", "kl_epsilon", "dual_learning_rate", "learning_rate", "adam_eps", "max_grad_norm"):
            check.number(owner, name, getattr(self, name), 0.0, inf, low_open=True)
        check.boolean(owner, "learn_temperature", self.learn_temperature)
        for name, low in (("learning_rate_decay_steps", 0), ("num_action_samples", 1), ("num_bins", 2),
                          ("num_atoms", 2), ("target_update_period", 1)):
            check.integer(owner, name, getattr(self, name), low=low)
        check.number(owner, "v_min", self.v_min)
        check.number(owner, "v_max", self.v_max)
        check.require(self.v_min < self.v_max, owner, "v_min", self.v_min, f"< v_max={self.v_max}")
        if self.target_polyak_tau is not None:
            check.number(owner, "target_polyak_tau", self.target_polyak_tau, 0.0, 1.0, low_open=True)
        check.one_of(owner, "compute_dtype", self.compute_dtype, COMPUTE_DTYPES)
        check.one_of(owner, "attention", self.attention, perceiver.ATTENTION_IMPLEMENTATIONS,
                     fix="attention: None (XLA) or 'cudnn'")
        check.require(self.attention != "cudnn" or self.compute_dtype == "bfloat16", owner, "attention",
                      self.attention, "None unless compute_dtype='bfloat16' (cuDNN's fused attention takes 16-bit inputs)")
        perceiver.get_config(self.network)
        return self

    @property
    def support(self) -> jax.Array:
        """The C atoms [C] of the return distribution."""
        return jnp.linspace(self.v_min, self.v_max, self.num_atoms, dtype=jnp.float32)


class PACState(eqx.Module):
    """online/target: PerceiverActorCritic (float32 master weights); opt_state: Adam state;
    log_temperature: f32 [T] log eta per task; dual_opt_state: its Adam state; steps: int32 [] updates
    applied; skipped: int32 [] updates skipped for non-finite values; key: uint32 [2] raw PRNG key data."""

    online: perceiver.PerceiverActorCritic
    target: perceiver.PerceiverActorCritic
    opt_state: optax.OptState
    log_temperature: jax.Array
    dual_opt_state: optax.OptState
    steps: jax.Array
    skipped: jax.Array
    key: jax.Array


def task_sizes(task_specs: StepSpec | Sequence[StepSpec]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(obs_sizes, action_sizes) per task; raises SpecMismatchError unless vector obs / continuous actions."""
    specs = [task_specs] if isinstance(task_specs, StepSpec) else list(task_specs)
    if not specs:
        raise SpecMismatchError("PAC needs at least one task spec.")
    for s in specs:
        if len(s.observation.shape) != 1 or len(s.action.shape) != 1 or s.num_actions is not None:
            raise SpecMismatchError(
                f"PAC task '{s.env_id or 'unnamed'}' has observation {s.observation.shape} and action "
                f"{s.action.shape} (num_actions={s.num_actions}); it needs vector observations [D] and "
                "continuous vector actions [A] in [-1, 1]. Flatten observations / rescale actions."
            )
    return tuple(s.observation.shape[0] for s in specs), tuple(s.action.shape[0] for s in specs)


def _optimizer(config: PACConfig) -> optax.GradientTransformation:
    return optim.adam(learning_rate_schedule(config), config.adam_eps, config.max_grad_norm)


def learning_rate_schedule(config: PACConfig) -> optax.ScalarOrSchedule:
    """The network's learning rate: constant, or cosine-decayed to 10% over learning_rate_decay_steps
    (a settling policy at the end of a fixed-length offline run, not one caught mid-oscillation)."""
    if not config.learning_rate_decay_steps:
        return config.learning_rate
    return optax.cosine_decay_schedule(config.learning_rate, config.learning_rate_decay_steps, alpha=0.1)


def _dual_optimizer(config: PACConfig) -> optax.GradientTransformation:
    return optax.adam(config.dual_learning_rate)


def init(key: jax.Array, task_specs: StepSpec | Sequence[StepSpec], config: PACConfig) -> PACState:
    """Validates `config`, builds online = target Perceiver, Adam state, counters at 0."""
    config.validate()
    obs_sizes, action_sizes = task_sizes(task_specs)
    net_key, state_key = jax.random.split(optim.key_data(key))
    online = _build_network(net_key, config.network, obs_sizes, action_sizes, config.num_bins, config.num_atoms,
                            config.attention)
    opt_state = _optimizer(config).init(eqx.filter(online, eqx.is_inexact_array))
    log_temperature = jnp.full((len(obs_sizes),), math.log(config.eta), jnp.float32)
    zero = jnp.zeros((), jnp.int32)
    return PACState(online=online, target=online, opt_state=opt_state, log_temperature=log_temperature,
                    dual_opt_state=_dual_optimizer(config).init(log_temperature), steps=zero, skipped=zero,
                    key=state_key)


@eqx.filter_jit  # one compile per network shape (not one per op, nor one per call)
def _build_network(key: jax.Array, network: str, obs_sizes: tuple, action_sizes: tuple, num_bins: int,
                   num_atoms: int, attention: str | None) -> perceiver.PerceiverActorCritic:
    return perceiver.PerceiverActorCritic(perceiver.get_config(network), obs_sizes, action_sizes, num_bins,
                                          num_atoms, key, attention)


def actions_to_bins(actions: jax.Array, num_bins: int) -> jax.Array:
    """[...] in [-1, 1] -> nearest bin index [...] int32 (bin centres linspace(-1, 1, K))."""
    return jnp.round((jnp.clip(actions, -1.0, 1.0) + 1.0) * 0.5 * (num_bins - 1)).astype(jnp.int32)


def bins_to_actions(bins: jax.Array, num_bins: int) -> jax.Array:
    """bin index [...] -> bin centre [...] f32 in [-1, 1]."""
    return bins.astype(jnp.float32) * (2.0 / (num_bins - 1)) - 1.0


def improvement_weights(q_values: jax.Array, eta: float) -> jax.Array:
    """Self-normalised weights of M actions sampled from pi': q_values [..., M] -> softmax(q / eta) [..., M].

    The pi'(a|s) factor of pi_imp is accounted for by sampling the actions from pi'.
    """
    return jax.nn.softmax(q_values.astype(jnp.float32) / eta, axis=-1)


def temperature_dual(log_temperature: jax.Array, q_values: jax.Array, epsilon: float,
                     task_id: jax.Array | None = None) -> jax.Array:
    """MPO's temperature dual, minimised over eta = exp(log_temperature), summed over tasks:
    sum_t [eta_t * epsilon + eta_t * mean_{s in t} log mean_j exp(q[s, j] / eta_t)].
    log_temperature [] or [T]; q_values [B, M]; task_id [B] int (None: every row is task 0) -> [].

    At each task's minimum KL(softmax(q / eta_t) || uniform over the M samples) = epsilon on average
    over that task's states; a task absent from the batch gets no gradient.
    """
    log_eta = jnp.reshape(log_temperature, (-1,))
    q = jax.lax.stop_gradient(q_values.astype(jnp.float32))
    task = jnp.zeros(q.shape[0], jnp.int32) if task_id is None else jnp.asarray(task_id, jnp.int32)
    eta = jnp.exp(log_eta)[task]  # [B]
    log_mean_exp = jax.nn.logsumexp(q / eta[:, None], axis=-1) - math.log(q.shape[-1])
    rows_per_task = jnp.zeros_like(log_eta).at[task].add(1.0)  # [T]
    return jnp.sum(eta * (epsilon + log_mean_exp) / rows_per_task[task])


def categorical_projection(probs: jax.Array, rewards: jax.Array, discounts: jax.Array,
                           support: jax.Array) -> jax.Array:
    """Projects r + discount * z onto `support`: probs [B, C] over support [C], rewards/discounts [B]
    -> target probs [B, C] (mass beyond the ends goes to the end atoms)."""
    atoms = rewards[:, None] + discounts[:, None] * support[None, :]
    return jax.vmap(value_ops.categorical_l2_project, in_axes=(0, 0, None))(atoms, probs, support)


def _log_probs(logits: jax.Array, bins: jax.Array, action_mask: jax.Array) -> jax.Array:
    """logits [B, D, K], bins [B, *S, D], mask [B, D] -> log pi(a|s) [B, *S] summed over real dims."""
    logp = jax.nn.log_softmax(logits, axis=-1)  # [B, D, K]
    extra = bins.ndim - 2
    logp = logp.reshape(logp.shape[:1] + (1,) * extra + logp.shape[1:])
    per_dim = jnp.take_along_axis(jnp.broadcast_to(logp, bins.shape + logp.shape[-1:]), bins[..., None], -1)[..., 0]
    mask = action_mask.reshape(action_mask.shape[:1] + (1,) * extra + action_mask.shape[1:])
    return jnp.sum(jnp.where(mask, per_dim, 0.0), axis=-1)


def policy_loss(logits: jax.Array, action_mask: jax.Array, data_bins: jax.Array, sample_bins: jax.Array,
                weights: jax.Array, alpha: float) -> tuple[jax.Array, dict]:
    """(1 - alpha) * CE(pi_imp, pi) + alpha * CE(b, pi), batch-averaged (= the KLs up to constants).

    logits [B, D, K]; action_mask [B, D] bool; data_bins [B, D] int; sample_bins [B, M, D] int;
    weights [B, M] (improvement weights, rows sum to 1). Returns (loss [], {"bc_loss", "improvement_loss"}).
    """
    bc = -jnp.mean(_log_probs(logits, data_bins, action_mask))
    imp = -jnp.mean(jnp.sum(jax.lax.stop_gradient(weights) * _log_probs(logits, sample_bins, action_mask), -1))
    return (1.0 - alpha) * imp + alpha * bc, {"bc_loss": bc, "improvement_loss": imp}


def critic_loss(logits: jax.Array, target_probs: jax.Array) -> jax.Array:
    """Mean KL(target || softmax(logits)): logits, target_probs [B, C] -> []."""
    t = jax.lax.stop_gradient(target_probs)
    log_t = jnp.where(t > 0, jnp.log(jnp.where(t > 0, t, 1.0)), 0.0)
    return jnp.mean(jnp.sum(t * (log_t - jax.nn.log_softmax(logits, -1)), -1))


def _masks(model, batch):
    obs_mask, act_mask = model.masks(jnp.asarray(batch["task_id"], jnp.int32))
    if "obs_mask" in batch:
        obs_mask = obs_mask & jnp.asarray(batch["obs_mask"], bool)
    if "action_mask" in batch:
        act_mask = act_mask & jnp.asarray(batch["action_mask"], bool)
    return obs_mask, act_mask


def _sample(key, logits, num, act_mask, num_bins):
    """logits [B, D, K] -> (bins [B, M, D], actions [B, M, D] masked to 0 in padded dims)."""
    bins = jax.random.categorical(key, logits[:, None], axis=-1, shape=(logits.shape[0], num) + logits.shape[1:2])
    return bins, jnp.where(act_mask[:, None], bins_to_actions(bins, num_bins), 0.0)


def _loss(params, static, target, eta, batch, key, config: PACConfig):
    dtype = jnp.dtype(config.compute_dtype)
    online = perceiver.cast_floating(eqx.combine(params, static), dtype)
    target = perceiver.cast_floating(target, dtype)
    task = jnp.asarray(batch["task_id"], jnp.int32)
    obs_mask, act_mask = _masks(online, batch)
    obs = jnp.where(obs_mask, jnp.asarray(batch["observation"], jnp.float32), 0.0)
    next_obs = jnp.where(obs_mask, jnp.asarray(batch["next_observation"], jnp.float32), 0.0)
    action = jnp.where(act_mask, jnp.clip(jnp.asarray(batch["action"], jnp.float32), -1.0, 1.0), 0.0)
    reward, discount = (jnp.asarray(batch[k], jnp.float32) for k in ("reward", "discount"))
    m, k_bins, support = config.num_action_samples, config.num_bins, config.support

    # Targets from the target network (no gradient); s and s' go through it as one [2B] batch.
    b = obs.shape[0]
    image = batch.get("image")
    images = None if image is None else jnp.concatenate([jnp.asarray(image), jnp.asarray(batch["next_image"])])
    t_lat = target.encode(jnp.concatenate([obs, next_obs]), jnp.concatenate([task, task]), images)
    mask2 = jnp.concatenate([act_mask, act_mask])
    bins2, actions2 = _sample(key, target.policy_logits(t_lat), m, mask2, k_bins)  # [2B, M, D]
    probs2 = jax.nn.softmax(target.critic_logits(t_lat, actions2, mask2), -1)  # [2B, M, C]
    sample_bins, q_samples = bins2[:b], probs2[:b] @ support  # [B, M, D], [B, M]
    weights = improvement_weights(q_samples, eta[task][:, None])
    next_probs = jnp.mean(probs2[b:], axis=1)  # mixture over a' ~ pi'(s')
    target_probs = categorical_projection(next_probs, reward, discount, support)
    weights, target_probs, sample_bins = jax.lax.stop_gradient((weights, target_probs, sample_bins))

    lat = online.encode(obs, task, batch.get("image"))
    pol_logits = online.policy_logits(lat)
    q_logits = online.critic_logits(lat, action[:, None], act_mask)[:, 0]
    pol, aux = policy_loss(pol_logits, act_mask, actions_to_bins(action, k_bins), sample_bins, weights, config.alpha)
    crit = critic_loss(q_logits, target_probs)
    entropy = -jnp.sum(jax.nn.softmax(pol_logits) * jax.nn.log_softmax(pol_logits), -1)
    metrics = {
        **aux, "policy_loss": pol, "critic_loss": crit,
        "q_data": jnp.mean(jax.nn.softmax(q_logits) @ support), "q_samples": jnp.mean(q_samples),
        "weights_max": jnp.mean(jnp.max(weights, -1)), "q_samples_all": q_samples,
        "policy_entropy": jnp.sum(jnp.where(act_mask, entropy, 0.0)) / jnp.maximum(jnp.sum(act_mask), 1),
    }
    finite = [jnp.where(obs_mask, batch[k], 0.0) for k in ("observation", "next_observation")]
    finite += [jnp.where(act_mask, batch["action"], 0.0), reward, discount]
    metrics["batch_finite"] = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in finite]))
    return pol + config.beta * crit, metrics


@functools.partial(jax.jit, static_argnames=("config",))  # every state leaf is an array: no filtering to pay
def update(state: PACState, batch: Mapping[str, Any], config: PACConfig) -> tuple[PACState, dict]:
    """One gradient step. metrics: loss, policy_loss, bc_loss, improvement_loss, critic_loss, q_data,
    q_samples, weights_max, policy_entropy, temperature (mean over tasks), grad_norm, skipped_nonfinite (0/1),
    skipped_total. With config.learn_temperature one Adam step on the temperature dual as well.

    If the batch (unpadded entries), the loss or the gradients hold NaN/inf, the new state equals the
    old one except `skipped` += 1. Inputs may be sharded over a "data" mesh axis (see shard_batch).
    """
    key, loss_key = jax.random.split(state.key)
    params, static = eqx.partition(state.online, eqx.is_inexact_array)
    fixed_eta = jnp.full_like(state.log_temperature, config.eta)
    eta = jnp.exp(state.log_temperature) if config.learn_temperature else fixed_eta  # [T], one per task
    (loss, metrics), grads = jax.value_and_grad(_loss, has_aux=True)(params, static, state.target, eta, batch,
                                                                      loss_key, config)
    q_all = metrics.pop("q_samples_all")
    grad_norm = optax.global_norm(grads)
    ok = metrics.pop("batch_finite") & jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    grads = jax.tree.map(lambda g: jnp.where(ok, g, 0.0), grads)
    updates, opt_state = _optimizer(config).update(grads, state.opt_state, params)
    online = eqx.apply_updates(state.online, updates)
    steps = state.steps + 1
    target = update_target(online, state.target, steps, config.target_update_period, config.target_polyak_tau)
    log_temperature, dual_opt_state = state.log_temperature, state.dual_opt_state
    if config.learn_temperature:
        dual_grad = jax.grad(temperature_dual)(log_temperature, q_all, config.kl_epsilon, batch["task_id"])
        dual_step, dual_opt_state = _dual_optimizer(config).update(dual_grad, dual_opt_state)
        log_temperature = jnp.clip(log_temperature + dual_step, -12.0, 12.0)
    new = PACState(online=online, target=target, opt_state=opt_state, log_temperature=log_temperature,
                   dual_opt_state=dual_opt_state, steps=steps, skipped=state.skipped, key=key)
    new_arrays, new_static = eqx.partition(new, eqx.is_array)
    old_arrays, _ = eqx.partition(state, eqx.is_array)
    kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_arrays, old_arrays)
    skip = (~ok).astype(jnp.int32)
    state = eqx.tree_at(lambda s: s.skipped, eqx.combine(kept, new_static), state.skipped + skip)
    metrics.update(loss=loss, grad_norm=grad_norm, temperature=jnp.mean(eta), skipped_nonfinite=skip,
                   skipped_total=state.skipped)
    return state, metrics


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis "data" over `devices` (default: all devices)."""
    return Mesh(np.asarray(list(jax.devices() if devices is None else devices)), ("data",))


def shard_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict:
    """Splits every field's leading [B] axis over the "data" axis; B must divide by the mesh size."""
    n = mesh.shape["data"]
    out = {}
    for k, v in batch.items():
        if np.shape(v)[:1] == () or np.shape(v)[0] % n:
            raise SpecMismatchError(f"shard_batch: field '{k}' has shape {np.shape(v)}; its leading batch "
                                    f"axis must be divisible by the {n} devices of the mesh.")
        out[k] = jax.device_put(v, NamedSharding(mesh, PartitionSpec("data")))
    return out


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every array of `tree` (e.g. a PACState) on all devices of `mesh`, replicated."""
    arrays, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.device_put(arrays, NamedSharding(mesh, PartitionSpec())), static)
