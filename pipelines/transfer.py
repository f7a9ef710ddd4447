"""Behaviour transfer (Campos et al., ICML 2021; PAPERS.md): a downstream online run that uses a pre-trained
policy (any `rillet train-online` run directory, e.g. NGU pre-trained with --ngu.reward-free) as

    explore  a temporally extended exploration option: with the actors' epsilon a "flight" of the frozen
             pre-trained policy starts and runs for a random number of steps (`actors.flights`), instead
             of epsilon-random actions; the own policy otherwise acts greedily;
    exploit  an exploitation candidate: the agent's action set is extended with one action A (A = the
             environment's number of actions) meaning "act as the pre-trained policy". The agent's Q-head
             gets one output more (its spec's num_actions is A + 1); where the own policy (epsilon-greedy
             over A + 1 actions, or greedy in evaluations) chooses A, the environment executes the
             pre-trained policy's action. Replay stores the chosen action, A included, so Q(x, A) learns
             the value of handing the step to the pre-trained policy; chose_pretrained marks those steps.
             This is the paper's "action set extended with the pre-trained policy" form; its other form
             (Q augmented with the pre-trained policy's values) is not built;
    both     both of the above: flight steps, too, record A (the pre-trained policy is acting), so that
             Q(x, A) also learns from the flights; the own policy acts greedily over A + 1 actions
             between flights. (Recording the primitive action instead would leave A untried: a greedy
             own policy never picks an action it has no data for.);
    none     neither: only fine-tuning (requires finetune).

finetune: the downstream learner's networks start from the pre-trained checkpoint's (same agent and the
same network shapes; ConfigError otherwise, e.g. exploit's extra Q output) and train; the optimiser
state starts fresh. Without it the downstream network starts fresh. The option and the candidate always
act with the frozen pre-trained policy.

    rillet train-online dqn --env-id ... --transfer.checkpoint runs/pre --transfer.mode both
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rillet import validation as check
from rillet.actors.flights import DISTRIBUTIONS, FlightConfig, flight_actor, flight_spec
from rillet.datasets.specs import StepSpec
from rillet.errors import ConfigError
from rillet.learners.agents.registry import ActorParts

__all__ = ["TransferConfig", "MODES", "candidate_env_spec", "transfer_spec", "transfer_actor", "transfer_evaluator",
           "pretrained_loader", "finetune_state", "TransferStats"]

MODES = ("exploit", "explore", "both", "none")
FRESH_FIELDS = ("opt_state", "steps", "key", "td_stats")  # learner-state fields a fine-tuned run starts fresh


@dataclasses.dataclass(frozen=True)
class TransferConfig:
    """Behaviour transfer from a pre-trained run (see the module docstring)."""

    checkpoint: str = ""
    """A `rillet train-online` run directory (its latest checkpoint) or one of its checkpoints/<step>; empty: off."""
    mode: str = "both"
    """'exploit' (extra action: act as the pre-trained policy), 'explore' (flights), 'both', 'none' (finetune only)."""
    finetune: bool = False
    """Start the downstream networks from the checkpoint's (same agent and network) and train them."""
    flight_distribution: str = "geometric"
    """Flight lengths: 'geometric', 'uniform' or 'zeta' (`actors.flights.FlightConfig`)."""
    flight_mean_length: float = 10.0
    flight_min_length: int = 1
    flight_max_length: int = 100

    @property
    def enabled(self) -> bool:
        return bool(self.checkpoint)

    @property
    def exploit(self) -> bool:
        return self.enabled and self.mode in ("exploit", "both")

    @property
    def explore(self) -> bool:
        return self.enabled and self.mode in ("explore", "both")

    def flights(self) -> FlightConfig:
        return FlightConfig(distribution=self.flight_distribution, mean_length=self.flight_mean_length,
                            min_length=self.flight_min_length, max_length=self.flight_max_length)

    def validate(self) -> "TransferConfig":
        owner = "TransferConfig"
        check.one_of(owner, "mode", self.mode, MODES, fix="--transfer.mode")
        check.boolean(owner, "finetune", self.finetune, fix="--transfer.finetune")
        check.one_of(owner, "flight_distribution", self.flight_distribution, DISTRIBUTIONS,
                     fix="--transfer.flight-distribution")
        if not self.enabled and self.finetune:
            raise ConfigError("--transfer.finetune needs --transfer.checkpoint DIR (the run to start from).")
        check.require(self.mode != "none" or self.finetune or not self.enabled, owner, "mode", self.mode,
                      "exploit, explore or both unless --transfer.finetune (mode none alone transfers nothing)",
                      fix="--transfer.mode or --transfer.finetune")
        self.flights().validate()
        return self


def candidate_env_spec(env_spec: StepSpec, transfer: TransferConfig) -> StepSpec:
    """The environment's spec as the downstream agent sees it: one action more with the exploitation candidate."""
    if not transfer.exploit:
        return env_spec
    if env_spec.num_actions is None:
        raise ConfigError(f"--transfer.mode {transfer.mode} extends a discrete action set, but {env_spec.env_id} has "
                          "continuous actions. Use --transfer.mode explore (flights) for it.")
    return dataclasses.replace(env_spec, num_actions=env_spec.num_actions + 1)


def transfer_spec(agent_spec: StepSpec, transfer: TransferConfig) -> StepSpec:
    """The agent's spec with what a transfer actor records (`actors.flights.flight_spec`)."""
    if not transfer.enabled or transfer.mode == "none":
        return agent_spec
    return flight_spec(agent_spec, candidate=transfer.exploit)


def pretrained_loader(transfer: TransferConfig, env_spec: StepSpec) -> Callable[[int], Any]:
    """num_envs -> the pre-trained run's frozen policy (`policy_loader.LoadedPolicy`) for `env_spec`'s
    environment (its own action set), loaded once per num_envs, with a fresh copy of its initial actor state
    on every call. Where transfer is on, it is loaded once here,
    so that a bad checkpoint is refused at once (CheckpointError, SpecMismatchError)."""
    from rillet.pipelines.policy_loader import load_policy

    loaded: dict[int, Any] = {}

    def load(num_envs: int):
        if num_envs not in loaded:
            loaded[num_envs] = load_policy(transfer.checkpoint, env_spec, num_envs)
        policy = loaded[num_envs]  # its actor state copied: a policy may donate the buffers it is given
        fresh = jax.tree.map(lambda x: jnp.array(x, copy=True), policy.parts.actor_state)
        return dataclasses.replace(policy, parts=dataclasses.replace(policy.parts, actor_state=fresh))

    if transfer.enabled:
        load(1)
    return load


def transfer_actor(transfer: TransferConfig, own: ActorParts, pretrained: Callable[[int], Any], env_spec: StepSpec,
                   num_envs: int) -> ActorParts:
    """The downstream actors: `own` (the agent's actor parts over the candidate spec) with the pre-trained
    policy as option and/or candidate. The flight start probabilities are the own actor's epsilons (its
    ladder); with exploit only, no flight starts and the own policy keeps its epsilon-greedy exploration."""
    if not transfer.enabled or transfer.mode == "none":
        return own
    config, epsilon = transfer.flights(), None
    if not transfer.explore:
        config, epsilon = dataclasses.replace(config, keep_own_epsilon=True), np.zeros(num_envs, np.float32)
    candidate = env_spec.num_actions if transfer.exploit else None
    return flight_actor(own, pretrained(num_envs), config, epsilon=epsilon, candidate=candidate)


def transfer_evaluator(transfer: TransferConfig, own: ActorParts, pretrained: Callable[[int], Any],
                       env_spec: StepSpec, num_envs: int) -> ActorParts:
    """The greedy evaluator: `own` (the agent's evaluator) over the extended action set where the mode
    includes exploit (choosing A executes the pre-trained policy's action); no flights."""
    if not transfer.exploit:
        return own
    config = dataclasses.replace(transfer.flights(), keep_own_epsilon=True)
    return flight_actor(own, pretrained(num_envs), config, epsilon=np.zeros(num_envs, np.float32),
                        candidate=env_spec.num_actions)


def finetune_state(state: Any, agent_name: str, transfer: TransferConfig) -> Any:
    """`state` (a fresh downstream learner state) with every network of the pre-trained checkpoint's state put
    in (all fields but the optimiser state, step count, key and TD statistics). ConfigError unless the
    checkpoint is a run of the same agent whose networks have the same structure and shapes."""
    from rillet.pipelines.online import load_online_run
    from rillet.pipelines.policy_loader import resolve_checkpoint_path

    run_dir, step = resolve_checkpoint_path(transfer.checkpoint)
    pre_config, _, pre = load_online_run(run_dir, step)
    if pre_config.agent != agent_name:
        raise ConfigError(f"--transfer.finetune starts the {agent_name} networks from '{run_dir}', a "
                          f"{pre_config.agent} run. Fine-tune from a run of the same agent, or drop "
                          "--transfer.finetune (the pre-trained policy then stays frozen).")
    names = [f.name for f in dataclasses.fields(state) if f.name not in FRESH_FIELDS]
    problems = [p for name in names for p in _shape_differences(name, getattr(state, name), getattr(pre, name))]
    if problems:
        raise ConfigError(f"--transfer.finetune: the networks of '{run_dir}' do not fit this run's: "
                          + "; ".join(problems[:6]) + ". Fine-tune with the pre-trained run's network options "
                          "(and --transfer.mode explore or none: exploit adds a Q output), or drop "
                          "--transfer.finetune.")
    return dataclasses.replace(state, **{name: getattr(pre, name) for name in names})


def _shape_differences(name: str, ours: Any, theirs: Any) -> list[str]:
    """What differs between two pytrees' structures or leaf shapes, as short descriptions."""
    a, b = jax.tree_util.tree_flatten_with_path(ours), jax.tree_util.tree_flatten_with_path(theirs)
    if a[1] != b[1]:
        return [f"{name} is built differently"]
    return [f"{name}{jax.tree_util.keystr(path)}: {np.shape(x)} here, {np.shape(y)} there"
            for (path, x), (_, y) in zip(a[0], b[0]) if np.shape(x) != np.shape(y)]


class TransferStats:
    """Per-step counts of a transfer actor's extras between two logs: the fraction of steps in flights and
    of steps where the pre-trained candidate was chosen (`add` from the actor thread, `take` at a log)."""

    def __init__(self):
        self._counts = np.zeros(3)  # steps, flight steps, candidate steps

    def add(self, step: dict) -> None:
        extras = step["extras"]
        in_flight = np.asarray(extras.get("in_flight", False))
        chose = np.asarray(extras.get("chose_pretrained", False))
        self._counts = self._counts + [np.size(step["action"]), np.sum(in_flight), np.sum(chose)]

    def take(self) -> dict:
        """{"flight_fraction", "candidate_fraction"} since the last take ({} where no step was counted)."""
        counts, self._counts = self._counts, np.zeros(3)
        if counts[0] == 0:
            return {}
        return {"flight_fraction": counts[1] / counts[0], "candidate_fraction": counts[2] / counts[0]}
