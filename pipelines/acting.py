"""The acting half of an online run: EnvPool actor -> Reverb writer, until a step budget or a stop
signal. Runs in a thread beside the learner (one process) or alone (`rillet act`, another process
writing to a Reverb server given by address)."""

from __future__ import annotations

import threading
from typing import Any, Callable

import jax
import numpy as np

from rillet.actors.actor_loop import envpool_actor
from rillet.actors.environments import env_step_spec, make_batched_env
from rillet.actors.episode_stats import episode_stats
from rillet.datasets.replay_stage import replay_writer
from rillet.datasets.reverb_writer import reverb_writer
from rillet.datasets.rlds_writer import rlds_writer
from rillet.errors import CheckpointError
from rillet.learners.agents import get_agent
from rillet.pipelines.stages import Stream, tap
from rillet.pipelines.transfer import pretrained_loader, transfer_actor

TRANSITIONS_TABLE = "transitions"


class LatestParams:
    """Holds the newest policy parameters; the learner sets, actors get (atomic reference swap)."""

    def __init__(self, params: Any):
        self._params = params

    def set(self, params: Any) -> None:
        self._params = params

    def get(self) -> Any:
        return self._params


class ActorCarry:
    """What of the actors' state outlives episodes (`ActorParts.carry`), between the actor thread and
    the checkpoints: `restored` is what a resumed run's actors start from (None: a fresh start);
    `latest` a host copy of the current one, refreshed by the actor thread after every tick."""

    def __init__(self, restored: Any = None):
        self.restored, self.latest = restored, None
        self._summarise: Callable[[Any], dict] | None = None

    def metrics(self) -> dict:
        """The latest carry's scalars (`ActorParts.carry_metrics`), {} where there are none."""
        latest, summarise = self.latest, self._summarise
        return {} if latest is None or summarise is None else {k: float(v) for k, v in summarise(latest).items()}

    def start(self, parts) -> Any:
        """The actor state to start from: parts.actor_state, with the restored carry put in."""
        if parts.carry is None or self.restored is None:
            return parts.actor_state
        fresh = jax.tree.map(np.shape, parts.carry(parts.actor_state))
        if jax.tree.map(np.shape, self.restored) != fresh:
            raise CheckpointError(
                f"the checkpoint's actor state has shapes {jax.tree.map(np.shape, self.restored)}, these actors "
                f"need {fresh} (another --actor.num-envs?). Resume with the run's actor options or start a new "
                "--run-dir.")
        return parts.resume(parts.actor_state, self.restored)

    def evaluation_state(self, parts) -> Any:
        """An evaluator's starting state: its actor_state, resumed from the actors' current carry where
        the evaluator reads it (e.g. Agent57's evaluation plays the actors' bandits' best arm)."""
        if parts.resume is None or self.latest is None:
            return parts.actor_state
        return parts.resume(parts.actor_state, self.latest)

    def observer(self, parts) -> Callable[[Any], None] | None:
        """The actor loop's on_actor_state hook: keeps `latest` (numpy copies; the policy may reuse
        its buffers on the next call)."""
        if parts.carry is None:
            return None
        self._summarise = parts.carry_metrics
        return lambda actor_state: setattr(self, "latest", jax.tree.map(np.array, parts.carry(actor_state)))


def record_path(record_dir: str, env_steps_done: int) -> str:
    """Where the actors record this leg's episodes: record_dir, or record_dir-<env steps> for a leg that
    resumes a run (each leg writes a dataset of its own)."""
    return f"{record_dir.rstrip('/')}-{env_steps_done}" if env_steps_done else record_dir


def act(config, spec, address: str, params_source: Callable[[], Any], env_steps_done: int,
        on_env_steps: Callable[[int], None] = lambda n: None,
        stop: threading.Event | None = None, on_episode: Callable[[dict], None] | None = None,
        carry: ActorCarry | None = None, slot: tuple[int, int] = (0, 1), seed_offset: int = 0,
        on_step: Callable[[dict], None] | None = None) -> int:
    """Acts until config.total_env_steps (counting env_steps_done) or until `stop` is set.

    Writes the agent's replay items (n-step transitions, sequences) to the Reverb table at
    `address`; calls on_episode (if given) with each finished episode's `episode_stats`; starts from
    and keeps `carry` (the actor state that outlives episodes), if given. slot (j, n): this is actor
    process j of n (its exploration members, `Agent.actor_parts`); seed_offset moves its env and policy
    seeds (other processes, restarts); on_step (if given) sees every batched step. With behaviour transfer
    (config.transfer) the agent's actors act with the pre-trained policy (`pipelines.transfer`).
    Returns the env steps it took.
    """
    stop = stop or threading.Event()
    a = config.actor
    agent = get_agent(config.agent)
    seed = config.seed + env_steps_done + seed_offset
    env = make_batched_env(config.env_id, a.num_envs, seed=seed, num_threads=a.num_threads,
                           observation_indices=config.observation_indices)
    writer = replay_writer(agent.replay_item(config.learner), address, TRANSITIONS_TABLE, spec, config.replay,
                           config.gamma)
    writer.stop_on(stop.is_set)
    parts = agent.actor_parts(spec, config.learner, a, a.num_envs, slot)
    if config.transfer.enabled:
        env_spec = env_step_spec(config.env_id, config.observation_indices)
        parts = transfer_actor(config.transfer, parts, pretrained_loader(config.transfer, env_spec), env_spec,
                               a.num_envs)
    budget = config.total_env_steps - env_steps_done
    max_ticks = max(0, -(-budget // a.num_envs))
    steps = 0

    def count(_):
        nonlocal steps
        steps += a.num_envs
        on_env_steps(a.num_envs)

    carry = carry or ActorCarry()
    stream = (Stream(envpool_actor(env, parts.policy, params_source, carry.start(parts), observe=parts.observe,
                                   seed=seed + 1, max_ticks=max_ticks,
                                   on_actor_state=carry.observer(parts)))
              | reverb_writer(writer) | tap(count))
    if on_step is not None:
        stream = stream | tap(on_step)
    if on_episode is not None:
        stream = stream | episode_stats(on_episode)
    if config.record_dir:  # every episode the actors finish, as an RLDS dataset (closed on exit)
        stream = stream | rlds_writer(record_path(config.record_dir, env_steps_done), spec, env_id=config.env_id,
                                      policy_name=f"{config.agent} (online)", seed=config.seed)
    try:
        for _ in stream:
            if stop.is_set():
                break
        stream.close()
    finally:
        writer.close()
        env.close()
    return steps


class ActorThread(threading.Thread):
    """Runs `act` in a daemon thread; the exception, if any, is re-raised by `check`."""

    def __init__(self, *args, **kwargs):
        super().__init__(daemon=True, name="rillet-actor")
        self.stop_event = threading.Event()
        self._args, self._kwargs = args, kwargs
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            act(*self._args, stop=self.stop_event, **self._kwargs)
        except BaseException as e:  # surfaced to the learner loop by check()
            if not self.stop_event.is_set():
                self.error = e

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"The actor thread failed: {self.error!r}") from self.error
