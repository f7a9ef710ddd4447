"""Actor policies: ``policy(params, observation, actor_state, key) -> (action, extras, actor_state)``.

Policies are jitted over the whole batch of environments. `params` is the learner's online
network (an Equinox module); `actor_state` holds per-environment state (here the epsilons).
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet.learners.continuous_targets import gaussian_log_density
from rillet.learners.pac import bins_to_actions


def epsilon_greedy(q_fn: Callable) -> Callable:
    """Wraps ``q_fn(params, observation[B, ...]) -> q[B, A]`` into a jitted epsilon-greedy policy.

    actor_state: {"epsilon": [B] float32}. Returns action [B] int32 and extras {} .
    """

    @eqx.filter_jit
    def policy(params, observation, actor_state, key):
        return epsilon_greedy_choice(q_fn(params, observation), actor_state["epsilon"], key), {}, actor_state

    return policy


def epsilon_greedy_choice(q: jax.Array, epsilon: jax.Array, key: jax.Array) -> jax.Array:
    """action [B] int32: a uniform random action with probability epsilon [B], else argmax of q [B, A]."""
    greedy = jnp.argmax(q, axis=-1).astype(jnp.int32)
    k_explore, k_action = jax.random.split(key)
    explore = jax.random.uniform(k_explore, epsilon.shape) < epsilon
    random_action = jax.random.randint(k_action, greedy.shape, 0, q.shape[-1], jnp.int32)
    return jnp.where(explore, random_action, greedy)


def member_epsilon_greedy(members_fn: Callable) -> Callable:
    """Thompson-style acting for an ensemble (bootstrapped DQN): each environment follows one member,
    drawn uniformly where an episode starts, epsilon-greedily.

    members_fn(params, observation [B, ...]) -> q [K, B, A]. actor_state: {"epsilon": [B] float32,
    "member": [B] int32, "is_first": [B] bool} (`member_observe` keeps is_first). Extras: {}.
    """

    @eqx.filter_jit
    def policy(params, observation, actor_state, key):
        q = members_fn(params, observation)  # [K, B, A]
        k_member, k_act = jax.random.split(key)
        drawn = jax.random.randint(k_member, actor_state["member"].shape, 0, q.shape[0], jnp.int32)
        member = jnp.where(actor_state["is_first"], drawn, actor_state["member"])
        followed = jnp.take_along_axis(q, member[None, :, None], axis=0)[0]  # [B, A]
        action = epsilon_greedy_choice(followed, actor_state["epsilon"], k_act)
        return action, {}, {**actor_state, "member": member}

    return policy


def member_observe(actor_state: dict, env_output) -> dict:
    """The observe hook of `member_epsilon_greedy`: marks the environments whose episode starts."""
    return {**actor_state, "is_first": jnp.asarray(env_output.first)}


def with_bootstrap_masks(policy: Callable, num_members: int, probability: float) -> Callable:
    """`policy` whose extras also carry each step's bootstrap mask [B, K] float32: member k trains on the
    transition starting at this step with `probability` (bootstrapped DQN's Bernoulli masks, drawn once
    when the experience is made, so every replay of the transition sees the same mask)."""

    @eqx.filter_jit
    def masked(params, observation, actor_state, key):
        k_policy, k_mask = jax.random.split(key)
        action, extras, actor_state = policy(params, observation, actor_state, k_policy)
        shape = (observation.shape[0], num_members)
        mask = jax.random.bernoulli(k_mask, probability, shape).astype(jnp.float32)
        return action, {**extras, "bootstrap_mask": mask}, actor_state

    return masked


def greedy(q_fn: Callable) -> Callable:
    """A jitted greedy policy (epsilon 0), same signature; actor_state is passed through."""

    @eqx.filter_jit
    def policy(params, observation, actor_state, key):
        del key
        return jnp.argmax(q_fn(params, observation), axis=-1).astype(jnp.int32), {}, actor_state

    return policy


def random_policy(num_actions: int | None, action_shape: tuple[int, ...] = ()) -> Callable:
    """Uniform random actions, same signature (params ignored): discrete actions in
    [0, num_actions), or, with num_actions None, continuous actions uniform in [-1, 1]^action_shape."""

    @jax.jit
    def policy(params, observation, actor_state, key):
        del params
        b = observation.shape[0]
        if num_actions is None:
            return jax.random.uniform(key, (b, *action_shape), jnp.float32, -1.0, 1.0), {}, actor_state
        return jax.random.randint(key, (b,), 0, num_actions, jnp.int32), {}, actor_state

    return policy


def recurrent_epsilon_greedy(head: str = "q", sample: bool = False, members: bool = False) -> Callable:
    """Epsilon-greedy over the head `head` of a `RecurrentNetwork`, jitted over the environments: with
    probability 1 - epsilon the head's argmax (Q-values), or with `sample` an action drawn from the
    softmax of the head (policy logits, e.g. MEME's distillation head "pi"); else uniform. members: the
    head gives an ensemble's members [B, K, A] (`networks.ensemble.MemberHeads`); act on their mean.

    actor_state: {"epsilon": [B], "core": (h, c) [B, H], "is_first": [B], "policy_index": [B], and one
    [B] entry per core input the network declares (e.g. "prev_action", "prev_reward"; see
    `recurrent_observe`)}. Extras record the core state entering the step, the behaviour probability
    of the taken action, every core input and the policy index j.
    """

    @eqx.filter_jit
    def policy(params, observation, actor_state, key):
        s = actor_state
        inputs = {i.name: s[i.name] for i in params.inputs}
        _, heads, core = params.step(observation, inputs, s["is_first"], s["core"])
        outputs = jnp.mean(heads[head], axis=-2) if members else heads[head]
        probs = behaviour_distribution(outputs, s["epsilon"], sample)
        action = jax.random.categorical(key, jnp.log(probs)).astype(s["prev_action"].dtype)
        prob = jnp.take_along_axis(probs, action[:, None].astype(jnp.int32), axis=-1)[:, 0]
        h, c = s["core"]
        extras = {"recurrent_state_h": h, "recurrent_state_c": c, "behaviour_prob": prob.astype(jnp.float32),
                  "prev_action": s["prev_action"], "prev_reward": s["prev_reward"],
                  "policy_index": s["policy_index"], **inputs}
        return action, extras, {**s, "core": core, "prev_action": action}

    return policy


def behaviour_distribution(outputs: jax.Array, epsilon: jax.Array, sample: bool = False) -> jax.Array:
    """mu = (1 - epsilon) * p + epsilon / A per row: outputs [B, A] (Q-values: p = one_hot(argmax); with
    `sample`, logits: p = softmax), epsilon [B] -> [B, A] float32, each row a distribution."""
    outputs = jnp.asarray(outputs, jnp.float32)
    num_actions = outputs.shape[-1]
    if sample:
        p = jax.nn.softmax(outputs, axis=-1)
    else:
        p = jax.nn.one_hot(jnp.argmax(outputs, axis=-1), num_actions, dtype=jnp.float32)
    eps = jnp.asarray(epsilon, jnp.float32)[:, None]
    return (1.0 - eps) * p + eps / num_actions


def recurrent_actor_state(epsilon, lstm_size: int, action_dtype: str = "int32") -> dict:
    """The initial actor state of `recurrent_epsilon_greedy` for len(epsilon) environments."""
    b = len(epsilon)
    zeros = jnp.zeros((b, lstm_size), jnp.float32)
    return {"epsilon": jnp.asarray(epsilon, jnp.float32), "core": (zeros, zeros),
            "prev_action": jnp.zeros(b, action_dtype), "prev_reward": jnp.zeros(b, jnp.float32),
            "is_first": jnp.ones(b, bool), "policy_index": jnp.zeros(b, jnp.int32)}


def recurrent_observe(actor_state: dict, env_output) -> dict:
    """The actor loop's observe hook: at an episode start (EnvPool auto-reset included) the previous
    action and reward inputs are 0 and the network resets its core; otherwise the previous reward
    is the one received on arriving at this observation."""
    first = jnp.asarray(env_output.first)
    return {**actor_state, "is_first": first,
            "prev_reward": jnp.where(first, 0.0, jnp.asarray(env_output.reward, jnp.float32)),
            "prev_action": jnp.where(first, jnp.zeros_like(actor_state["prev_action"]), actor_state["prev_action"])}


def reward_free_observe(actor_state: dict, env_output) -> dict:
    """`recurrent_observe` with the environment's reward taken as 0: the previous-reward core input of a
    reward-free agent (`NGUConfig.reward_free`) never carries the extrinsic reward."""
    return recurrent_observe(actor_state, env_output._replace(reward=np.zeros(np.shape(env_output.reward),
                                                                              np.float32)))


DISCRETISED_ACTIONS = ("sample", "mode", "mean")


def discretised_policy(task_id: int, num_bins: int, action: str = "sample") -> Callable:
    """The acting policy of a Perceiver actor-critic (PAC) for one task, jitted over the batch.

    params: a network with ``encode(obs [B, obs_max], task_id [B]) -> latents``,
    ``policy_logits(latents) -> [B, D_max, K]``, and ``obs_sizes``/``action_sizes`` per task.
    Observations are zero-padded to obs_max. Per action dimension, `action` picks:
      "sample": a bin drawn from pi(.|s), mapped to its centre (acting for data collection);
      "mode":   the most likely bin's centre (argmax per dimension);
      "mean":   the expected action sum_k pi_k * centre_k, a deterministic action in [-1, 1].
    The argmax of a two-peaked (bang-bang) distribution commits to one extreme; the mean keeps the
    balance of the two peaks, as a Gaussian policy's mean does. Returns the task's first
    action_sizes[task_id] dims, [B, A] float32; extras {"task_id": [B] int32}.
    """
    if action not in DISCRETISED_ACTIONS:
        raise ValueError(f"discretised_policy: action={action!r}; use one of {DISCRETISED_ACTIONS}.")

    @eqx.filter_jit
    def policy(params, observation, actor_state, key):
        b, size = observation.shape
        obs_max = max(params.obs_sizes)
        obs = jnp.pad(observation.astype(jnp.float32), ((0, 0), (0, obs_max - size)))
        tasks = jnp.full((b,), task_id, jnp.int32)
        logits = params.policy_logits(params.encode(obs, tasks)).astype(jnp.float32)  # [B, D_max, K]
        if action == "mean":
            actions = jax.nn.softmax(logits, -1) @ bins_to_actions(jnp.arange(num_bins), num_bins)
        else:
            bins = jax.random.categorical(key, logits) if action == "sample" else jnp.argmax(logits, axis=-1)
            actions = bins_to_actions(bins, num_bins)
        return actions[:, : params.action_sizes[task_id]], {"task_id": tasks}, actor_state

    return policy


def gaussian_exploration(action_fn: Callable) -> Callable:
    """Continuous-action exploration around a deterministic policy (TD3's actors), jitted over the batch.

    action_fn(params, observation [B, ...]) -> mean action [B, A] in [-1, 1]. actor_state (see
    `gaussian_actor_state`): {"noise_scale": [B] float32, "warmup_left": [B] int32}. While an
    environment's warmup_left > 0 it acts uniformly in [-1, 1]^A (log mu = -A log 2) and counts down;
    after that a = clip(mean + noise_scale * N(0, I), -1, 1), log mu = log N(a; mean, noise_scale^2 I)
    at the clipped action (the clipping's point masses ignored). Returns action [B, A] float32 and
    extras {"behaviour_log_prob": [B] float32}.
    """

    @eqx.filter_jit
    def policy(params, observation, actor_state, key):
        mean = jnp.asarray(action_fn(params, observation), jnp.float32)
        k_noise, k_uniform = jax.random.split(key)
        scale = jnp.asarray(actor_state["noise_scale"], jnp.float32)
        noisy = jnp.clip(mean + scale[:, None] * jax.random.normal(k_noise, mean.shape), -1.0, 1.0)
        uniform = jax.random.uniform(k_uniform, mean.shape, jnp.float32, -1.0, 1.0)
        warm = actor_state["warmup_left"] > 0
        action = jnp.where(warm[:, None], uniform, noisy)
        log_prob = jnp.where(warm, -mean.shape[-1] * jnp.log(2.0), gaussian_log_density(noisy, mean, scale))
        left = jnp.maximum(actor_state["warmup_left"] - 1, 0)
        return action, {"behaviour_log_prob": log_prob}, {**actor_state, "warmup_left": left}

    return policy


def gaussian_actor_state(noise_scale, warmup_steps: int = 0) -> dict:
    """The initial actor state of `gaussian_exploration` for len(noise_scale) environments sharing
    `warmup_steps` uniformly random env steps (ceil(warmup_steps / B) each)."""
    b = len(noise_scale)
    return {"noise_scale": jnp.asarray(noise_scale, jnp.float32),
            "warmup_left": jnp.full(b, -(-int(warmup_steps) // b), jnp.int32)}


def deterministic(action_fn: Callable) -> Callable:
    """The deterministic policy action_fn(params, observation [B, ...]) -> action [B, A], jitted, as a
    policy (evaluation of TD3's actor); extras {}, actor_state passed through."""

    @eqx.filter_jit
    def policy(params, observation, actor_state, key):
        del key
        return jnp.asarray(action_fn(params, observation), jnp.float32), {}, actor_state

    return policy
