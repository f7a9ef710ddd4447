"""The EnvPool actor loop: a source stage that emits batched RLDS steps.

Each tick the loop asks the policy for actions for all B environments, steps the pool, and emits
one batched RLDS step (see DESIGN.md, "The data contract"):

    observation o_t, action a_t, reward r_t, discount d_t, is_first, is_last, is_terminal, extras

For a step with is_last the action was ignored by EnvPool (auto-reset) and reward/discount are 0.
A policy whose recorded action is not the environment's (behaviour transfer's "act as the pre-trained
policy" candidate, `actors.flights`) gives the one to execute as extras["executed_action"].
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import numpy as np

from rillet.actors.envpool_env import BatchedEnv


def executed_action(action: Any, extras: Any) -> np.ndarray:
    """The action [B, ...] the environment executes: extras["executed_action"] where the policy gives one,
    else the recorded `action`."""
    if isinstance(extras, dict) and "executed_action" in extras:
        return np.asarray(extras["executed_action"])
    return np.asarray(action)


def envpool_actor(
    env: BatchedEnv,
    policy: Callable,
    params_source: Callable[[], Any],
    actor_state: Any,
    seed: int,
    observe: Callable[[Any, Any], Any] | None = None,
    max_ticks: int | None = None,
    on_actor_state: Callable[[Any], None] | None = None,
) -> Iterator[dict]:
    """Yields batched steps {"observation": [B, ...], "action": [B], ...} forever or for max_ticks.

    params_source: called every tick for the latest policy parameters (e.g. the learner's).
    observe: optional ``(actor_state, env_output: EnvOutput) -> actor_state`` hook, called every
      tick before the policy: resets per-env actor state (recurrent state, episodic memory) where
      ``env_output.first`` and records what the policy needs besides the observation (the
      previous reward).
    on_actor_state: optional, called with the new actor state after each policy call (in this
      thread, while its arrays are valid: a policy may donate them on its next call).
    """
    key = jax.random.PRNGKey(seed)
    out = env.reset()
    tick = 0
    while max_ticks is None or tick < max_ticks:
        if observe is not None:
            actor_state = observe(actor_state, out)
        key, sub = jax.random.split(key)
        action, extras, actor_state = policy(params_source(), out.observation, actor_state, sub)
        if on_actor_state is not None:
            on_actor_state(actor_state)
        action = np.asarray(action)
        nxt = env.step(executed_action(action, extras))
        yield {
            "observation": out.observation,
            "action": action,
            "reward": np.where(out.last, 0.0, nxt.reward).astype(np.float32),
            "discount": np.where(out.last, 0.0, nxt.discount).astype(np.float32),
            "is_first": out.first,
            "is_last": out.last,
            "is_terminal": out.terminal,
            "extras": jax.tree.map(np.asarray, extras),
        }
        out = nxt
        tick += 1
