"""The agent record: one declaration per agent of the plain parts it is made of, and the registry the
runners, the CLI, checkpointing and parameter sync read (nothing else of an agent is read by them).

    MY_AGENT = register(Agent(name="my-agent", config_type=MyConfig, spec=..., init=..., update=...,
                              network=..., actor=..., evaluator=..., replay_item=..., check_batch=...))
    agent = get_agent("r2d2")        # AgentError naming the known agents otherwise
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from rillet.datasets.specs import StepSpec
from rillet.errors import ConfigError

__all__ = ["Agent", "ActorParts", "ReplayItem", "register", "unregister", "get_agent", "agent_names",
           "learner_fields"]


@dataclasses.dataclass(frozen=True)
class ActorParts:
    """What an actor (or an evaluator) runs: ``policy(params, observation [B, ...], actor_state, key)
    -> (action [B, ...], extras, actor_state)``, jitted; its initial actor_state for the B
    environments; and an optional observe hook ``(actor_state, env_output) -> actor_state`` called
    every tick before the policy (resets at episode starts, previous reward inputs).

    What of the actor state outlives episodes (running statistics, a bandit's counts) is checkpointed
    beside the learner state: ``carry(actor_state) -> pytree`` picks it out and ``resume(actor_state,
    carried) -> actor_state`` puts it into a fresh actor state when a run resumes (its episodes start
    anew, so the per-episode state starts fresh). Both None: nothing outlives an episode. An evaluator's
    resume takes the actors' carry instead (what an evaluation reads from the actors, e.g. a bandit's
    best arm)."""

    policy: Callable
    actor_state: Any
    observe: Callable | None = None
    carry: Callable[[Any], Any] | None = None
    resume: Callable[[Any, Any], Any] | None = None
    carry_metrics: Callable[[Any], dict] | None = None
    """Scalars of a carry (e.g. a cluster memory's atoms in use), logged with the actors' metrics."""


@dataclasses.dataclass(frozen=True)
class ReplayItem:
    """What the actors write to replay and the learner samples: "transition" (n-step transitions;
    n and gamma come from the run's replay options) or "sequence" (`length` consecutive steps,
    written every replay.sequence_period steps)."""

    kind: str
    length: int = 0

    def __post_init__(self):
        if self.kind not in ("transition", "sequence") or (self.kind == "sequence") != (self.length > 0):
            raise ConfigError(f"ReplayItem({self.kind!r}, length={self.length}): use kind 'transition' "
                              "or kind 'sequence' with a length >= 1.")


@dataclasses.dataclass(frozen=True)
class Agent:
    """One agent, as a record of plain parts (all functions of the agent's config `cfg`):

    name          the CLI subcommand and checkpoint fingerprint name ("r2d2")
    config_type   its options: a frozen dataclass with `validate() -> self`; `config_type()` the defaults
    spec          (env StepSpec, cfg) -> StepSpec with the extras its actors record
    init          (key, spec, cfg) -> learner state (a pytree)
    update        (state, batch, cfg) -> (state, metrics); metrics["priorities"] [B] when `prioritized`
    network       state -> the parameters actors act with (published to actor processes)
    actor         (spec, cfg, num_envs, exploration) -> ActorParts; exploration {name: [num_envs]} from
                  the exploration family (per-actor parameters, e.g. {"epsilon": ...}) or None
    evaluator     (spec, cfg, num_envs) -> ActorParts of the evaluation policy
    replay_item   cfg -> ReplayItem
    check_batch   (spec, batch) -> None; raises SpecMismatchError for a batch the learner cannot take
    exploration   (cfg, actor options) -> an exploration family (`parameters(num_actors)`) or None
    prioritized   update returns new replay priorities (prioritized replay is allowed)
    defaults      () -> the config an online run starts from (None: `config_type()`)
    replay_defaults  cfg -> {replay option: value}: what `rillet train-online AGENT` (and act, replay-server)
                  start from instead of the run's replay defaults (None: those), e.g. a sequence period
    """

    name: str
    config_type: type
    spec: Callable[[StepSpec, Any], StepSpec]
    init: Callable[..., Any]
    update: Callable[..., tuple[Any, dict]]
    network: Callable[[Any], Any]
    actor: Callable[..., ActorParts]
    evaluator: Callable[..., ActorParts]
    replay_item: Callable[[Any], ReplayItem]
    check_batch: Callable[[StepSpec, Mapping], None]
    exploration: Callable[[Any, Any], Any] = lambda cfg, actor_options: None
    prioritized: bool = True
    defaults: Callable[[], Any] | None = None
    replay_defaults: Callable[[Any], Mapping[str, Any]] | None = None
    summary: str = ""

    def default_config(self) -> Any:
        """The agent's default options for an online run."""
        return self.config_type() if self.defaults is None else self.defaults()

    def actor_parts(self, spec: StepSpec, cfg: Any, actor_options: Any, num_envs: int,
                    slot: tuple[int, int] = (0, 1)) -> ActorParts:
        """The acting parts for `num_envs` environments with this agent's exploration family. slot
        (j, n): these environments are process j's of n alike, so they take members j * num_envs to
        (j + 1) * num_envs - 1 of the family over all n * num_envs environments (one run on many processes)."""
        family = self.exploration(cfg, actor_options)
        j, n = slot
        members = slice(j * num_envs, (j + 1) * num_envs)
        params = None if family is None else {k: np.asarray(v)[members]
                                              for k, v in family.parameters(n * num_envs).items()}
        return self.actor(spec, cfg, num_envs, params)


_AGENTS: dict[str, Agent] = {}


def learner_fields(module: Any, config_type: type) -> dict:
    """The Agent fields a learner module gives by its names: config_type, spec (module.spec_extras),
    init and update, for `Agent(**learner_fields(m, Config), ...)` or `dataclasses.replace`."""
    return {"config_type": config_type, "spec": module.spec_extras, "init": module.init, "update": module.update}


def register(agent: Agent) -> Agent:
    """Adds `agent` to the registry (ConfigError if its name is taken by another record); returns it."""
    if not isinstance(agent, Agent):
        raise ConfigError(f"register() takes an Agent record, got {type(agent).__name__}.")
    if agent.name in _AGENTS and _AGENTS[agent.name] is not agent:
        raise ConfigError(f"an agent named {agent.name!r} is already registered; choose another name.")
    _AGENTS[agent.name] = agent
    return agent


def unregister(name: str) -> None:
    """Removes an agent (e.g. one a test registered)."""
    _AGENTS.pop(name, None)


def agent_names() -> list[str]:
    """The registered agents' names, sorted."""
    _load_builtin()
    return sorted(_AGENTS)


def get_agent(name: str) -> Agent:
    """The record of `name`; ConfigError naming the known agents otherwise."""
    _load_builtin()
    try:
        return _AGENTS[name]
    except KeyError:
        raise ConfigError(f"unknown agent {name!r}; known agents: {sorted(_AGENTS)}.") from None


def _load_builtin() -> None:
    import rillet.learners.agents  # noqa: F401  (importing it registers dqn, r2d2 and pac)
