"""Flights: a pre-trained policy as a temporally extended exploration option (behaviour transfer, Campos
et al., ICML 2021; PAPERS.md). Instead of an epsilon-random action, with the exploration probability the
actor hands control to the pre-trained policy for a random number of steps (a "flight"), then returns
to the agent's own policy, which otherwise acts greedily.

    parts = flight_actor(agent.actor_parts(spec, cfg, actor_options, B), load_policy(run_dir, env_spec, B),
                         FlightConfig(distribution="geometric", mean_length=10))
    # parts.policy(params, observation [B, ...], actor_state, key) -> (action [B], extras, actor_state)

Per environment and tick t (all B at once; state in, state out):

    if remaining == 0 and u_t < epsilon:       remaining = L ~ the length distribution (L >= 1)
    in_flight = remaining > 0
    a_t = pretrained action if in_flight else own action;  remaining -= in_flight

so a flight acts for exactly L consecutive steps unless its episode ends: the observe hook sets
remaining = 0 where the environment starts an episode (is_first, EnvPool auto-resets included), and that
first step is decided like any step out of a flight. A new flight may start on the step after one ends.

Both policies are called every tick, each with its own actor state and observe hook: the pre-trained
policy's recurrent state (if any) is stepped on every observation, in flights or not, so that when a
flight starts its core summarises the episode so far (as if it had watched it), and it is reset only at
episode starts. Actor states that hold "prev_action" (the recurrent policies' input, `recurrent_observe`)
are given the action actually taken, whichever policy took it.

Extras (`flight_spec`): the own policy's extras (its recurrent state, core inputs, ...) and
  in_flight [B] bool        the pre-trained policy chose a_t;
  flight_remaining [B] int32 pre-trained steps left in this flight after t (0 on its last step and off flights);
  behaviour_prob [B] float32 the probability of a_t under the policy that acted at t, given the actor's
      flight state: the pre-trained policy's on flight steps, the own policy's otherwise (each policy's
      extras["behaviour_prob"]; a policy that records none is taken as deterministic, probability 1, as
      the greedy evaluators are). The flight decision is part of the behaviour's state, as an option's is;
      this is NOT the marginal epsilon * pi_pre(a|x) + (1 - epsilon) * pi_own(a|x) of a step where a flight
      could start (the policy signature exposes only the taken action's probability, not the distributions).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet import validation as check
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError
from rillet.learners.agents.registry import ActorParts

__all__ = ["FlightConfig", "flight_lengths", "flight_policy", "flight_actor", "flight_spec", "flight_fraction",
           "FLIGHT_EXTRAS", "CANDIDATE_EXTRAS"]

DISTRIBUTIONS = ("geometric", "uniform", "zeta")
FLIGHT_EXTRAS = {"in_flight": ArraySpec((), "bool"), "flight_remaining": ArraySpec((), "int32"),
                 "behaviour_prob": ArraySpec((), "float32")}
CANDIDATE_EXTRAS = {"executed_action": ArraySpec((), "int32"), "chose_pretrained": ArraySpec((), "bool")}


@dataclasses.dataclass(frozen=True)
class FlightConfig:
    """The flight length distribution and how the agent's own policy acts.

    distribution:  "geometric" P(L = k) = p (1 - p)^(k - 1), p = 1 / mean_length, capped at max_length;
                   "uniform"   L uniform in [min_length, max_length] (min = max: a fixed length);
                   "zeta"      P(L = k) proportional to k^(-zeta_exponent), k in [1, max_length] (the
                   heavy-tailed duration law of temporally-extended epsilon-greedy, Dabney et al. 2021).
    The defaults (geometric, mean 10, cap 100) are placeholders: the paper's own length distribution is
    not recorded in PAPERS.md (unverified).
    keep_own_epsilon: False (the paper's use): flights replace the own policy's epsilon-random actions,
        so the own policy acts greedily (its actor state's "epsilon" set to 0) and its epsilon becomes
        the flight start probability. True: the own policy keeps its epsilon-greedy exploration besides
        flights (it must then record "behaviour_prob").
    """

    distribution: str = "geometric"
    mean_length: float = 10.0
    min_length: int = 1
    max_length: int = 100
    zeta_exponent: float = 2.0
    keep_own_epsilon: bool = False

    def validate(self) -> "FlightConfig":
        owner = "FlightConfig"
        check.one_of(owner, "distribution", self.distribution, DISTRIBUTIONS, fix="distribution")
        check.number(owner, "mean_length", self.mean_length, 1.0, fix="mean_length >= 1 (e.g. 10)")
        check.integer(owner, "max_length", self.max_length, 1, 1_000_000, fix="max_length (e.g. 100)")
        check.integer(owner, "min_length", self.min_length, 1, self.max_length,
                      fix=f"min_length in [1, max_length={self.max_length}]")
        check.number(owner, "zeta_exponent", self.zeta_exponent, 0.0, low_open=True, fix="zeta_exponent (e.g. 2)")
        check.boolean(owner, "keep_own_epsilon", self.keep_own_epsilon, fix="keep_own_epsilon")
        return self


def flight_lengths(key: jax.Array, config: FlightConfig, shape: tuple[int, ...]) -> jax.Array:
    """Flight lengths drawn from config's distribution: int32 `shape`, each in [1, max_length]."""
    if config.distribution == "uniform":
        return jax.random.randint(key, shape, config.min_length, config.max_length + 1, jnp.int32)
    if config.distribution == "zeta":
        logits = -config.zeta_exponent * jnp.log(jnp.arange(1, config.max_length + 1, dtype=jnp.float32))
        return (jax.random.categorical(key, logits, shape=shape) + 1).astype(jnp.int32)
    # Geometric by inversion: 1 + floor(log u / log(1 - p)); p = 1 (mean 1) gives log(1 - p) = -inf, L = 1.
    u = jax.random.uniform(key, shape, jnp.float32, jnp.finfo(jnp.float32).tiny, 1.0)
    length = 1.0 + jnp.floor(jnp.log(u) / jnp.log1p(-1.0 / config.mean_length))
    return jnp.clip(length, 1, config.max_length).astype(jnp.int32)


def flight_spec(spec: StepSpec, candidate: bool = False) -> StepSpec:
    """`spec` with the extras a flight actor records (in_flight, flight_remaining, behaviour_prob; with the
    exploitation candidate also executed_action and chose_pretrained)."""
    return spec.with_extras(**FLIGHT_EXTRAS, **(CANDIDATE_EXTRAS if candidate else {}))


def flight_fraction(in_flight: Any) -> float:
    """The fraction of steps in flights: the mean of recorded in_flight extras (any shape, e.g. [T, B])."""
    return float(np.mean(np.asarray(in_flight, np.float64)))


def _probability(extras: dict, batch: int) -> jax.Array:
    """The policy's recorded probability of its action [B] float32; 1 if it records none (deterministic)."""
    prob = extras.get("behaviour_prob") if isinstance(extras, dict) else None
    return jnp.ones(batch, jnp.float32) if prob is None else jnp.asarray(prob, jnp.float32)


def _took(actor_state: Any, action: jax.Array) -> Any:
    """actor_state with "prev_action" (where it has one) set to the action actually taken."""
    if isinstance(actor_state, dict) and "prev_action" in actor_state:
        return {**actor_state, "prev_action": action.astype(actor_state["prev_action"].dtype)}
    return actor_state


def _choose(config: FlightConfig) -> Callable:
    """The jitted per-tick flight decision: (own_action [B, ...], pretrained_action [B, ...], own_prob [B],
    pretrained_prob [B], epsilon [B], remaining [B] int32, key) -> (action [B, ...], in_flight [B] bool,
    remaining after this step [B] int32, behaviour_prob [B] float32)."""

    @jax.jit
    def choose(own_action, pre_action, own_prob, pre_prob, epsilon, remaining, key):
        k_start, k_length = jax.random.split(key)
        b = remaining.shape[0]
        start = (remaining == 0) & (jax.random.uniform(k_start, (b,)) < epsilon)
        remaining = jnp.where(start, flight_lengths(k_length, config, (b,)), remaining)
        in_flight = remaining > 0
        wide = in_flight.reshape((b,) + (1,) * (own_action.ndim - 1))
        action = jnp.where(wide, pre_action.astype(own_action.dtype), own_action)
        prob = jnp.where(in_flight, pre_prob, own_prob)
        return action, in_flight, remaining - in_flight.astype(jnp.int32), prob

    return choose


@functools.partial(jax.jit, static_argnums=4)
def _candidate(action: jax.Array, pre_action: jax.Array, in_flight: jax.Array, prob: jax.Array, candidate: int):
    """(recorded action [B], executed action [B], chose_pretrained [B] bool, behaviour_prob [B]) with the
    candidate action: flight steps and the own policy's choices of `candidate` execute the pre-trained
    policy's action and record `candidate` (flight steps with probability 1: the flight state decides it);
    every other action is recorded and executed as it is."""
    chose = (action == candidate) & ~in_flight
    executed = jnp.where(chose | in_flight, pre_action.astype(action.dtype), action)
    recorded = jnp.where(in_flight, jnp.asarray(candidate, action.dtype), action)
    return recorded, executed, chose, jnp.where(in_flight, 1.0, prob)


def flight_policy(own_policy: Callable, pretrained_policy: Callable, config: FlightConfig,
                  candidate: int | None = None, flights: bool = True) -> Callable:
    """The flight policy over a pair of parameters: ``policy((own_params, pretrained_params), observation
    [B, ...], actor_state, key) -> (action [B, ...], extras, actor_state)`` (pairing the parameters lets a
    fine-tuned pre-trained policy take new ones; `flight_actor` fixes them for a frozen one).

    actor_state: {"own": the own policy's state, "pretrained": the pre-trained policy's, "epsilon": [B]
    float32 flight start probabilities, "remaining": [B] int32 flight steps left}. Each policy is called
    as it is (jitted itself), the decision is one jitted function; see the module docstring.

    candidate: the pre-trained policy as an exploitation candidate (see `flight_actor`): the own policy's
    action `candidate` (= the environment's number of actions) means "act as the pre-trained policy".
    flights: False when no flight can start (epsilon all 0): the own policy's probabilities are then not
    needed for keep_own_epsilon."""
    config.validate()
    choose = _choose(config)

    def policy(params, observation, actor_state, key):
        own_params, pre_params = params
        s = actor_state
        k_own, k_pre, k_flight = jax.random.split(key, 3)
        own_action, own_extras, own_state = own_policy(own_params, observation, s["own"], k_own)
        pre_action, pre_extras, pre_state = pretrained_policy(pre_params, observation, s["pretrained"], k_pre)
        b = s["remaining"].shape[0]
        if flights and config.keep_own_epsilon and "behaviour_prob" not in own_extras:
            raise ConfigError("FlightConfig.keep_own_epsilon=True, but the agent's own policy records no "
                              "behaviour_prob, so the probability of its epsilon-greedy actions is unknown. "
                              "Set keep_own_epsilon=False (the own policy acts greedily) or use a policy that "
                              "records behaviour_prob.")
        action, in_flight, remaining, prob = choose(own_action, pre_action, _probability(own_extras, b),
                                                    _probability(pre_extras, b), s["epsilon"], s["remaining"],
                                                    k_flight)
        executed = action
        if candidate is not None:
            action, executed, chose, prob = _candidate(action, pre_action, in_flight, prob, candidate)
            own_extras = {**own_extras, "executed_action": executed, "chose_pretrained": chose}
        extras = {**own_extras, "behaviour_prob": prob, "in_flight": in_flight, "flight_remaining": remaining}
        return action, extras, {**s, "own": _took(own_state, action), "pretrained": _took(pre_state, executed),
                                "remaining": remaining}

    return policy


@eqx.filter_jit
def _end_flights(remaining: jax.Array, first: jax.Array) -> jax.Array:
    return jnp.where(jnp.asarray(first), 0, remaining)


def _observe(own: ActorParts, pretrained: ActorParts) -> Callable:
    """The observe hook: each policy's own hook on its state, and flights end where an episode starts."""

    def observe(actor_state: dict, env_output) -> dict:
        s = dict(actor_state)
        if own.observe is not None:
            s["own"] = own.observe(s["own"], env_output)
        if pretrained.observe is not None:
            s["pretrained"] = pretrained.observe(s["pretrained"], env_output)
        s["remaining"] = _end_flights(s["remaining"], env_output.first)
        return s

    return observe


def flight_actor(own: ActorParts, pretrained: Any, config: FlightConfig, epsilon: Any = None,
                 candidate: int | None = None) -> ActorParts:
    """ActorParts of the agent's own actor (`own`, e.g. `agent.actor_parts(...)`) with flights of a frozen
    pre-trained policy (`pretrained`: a `pipelines.policy_loader.LoadedPolicy` built for the same number
    of environments, or anything with .parts and .params). The returned policy takes the own parameters,
    like `own.policy`; the pre-trained ones are fixed.

    epsilon: [B] flight start probabilities; default the own actor state's "epsilon" (the agent's ladder).
    Unless config.keep_own_epsilon, the own policy's "epsilon" is set to 0 (it acts greedily). What of the
    own state outlives episodes (own.carry / own.resume) is carried as before; flights and the
    pre-trained policy's state start fresh on resume.

    candidate (behaviour transfer's exploitation candidate; the environment's number of actions A): the
    own policy acts over A + 1 actions, its Q-head one output more, and its action A means "act as the
    pre-trained policy". The recorded action (what replay stores and the own policy's prev_action input
    sees) is the chosen one, A included, so the learner's Q(x, A) is the value of handing this step to the
    pre-trained policy; the environment executes extras["executed_action"] (the pre-trained policy's action
    where A was chosen; the actor loop and the evaluations step with it), and extras["chose_pretrained"]
    marks those steps. Flight steps, too, record A (the pre-trained policy acts: Q(x, A) learns from
    the flights, with behaviour probability 1 given the flight state) and execute the pre-trained action;
    without the candidate they record the pre-trained policy's primitive action."""
    config.validate()
    own_state = own.actor_state
    if epsilon is None:
        if not (isinstance(own_state, dict) and "epsilon" in own_state):
            raise ConfigError("flight_actor: the own actor state has no 'epsilon' to take the flight start "
                              "probabilities from; pass epsilon=[B] probabilities.")
        epsilon = own_state["epsilon"]
    epsilon = np.asarray(epsilon, np.float32).reshape(-1)
    check.require(bool(np.all((epsilon >= 0) & (epsilon <= 1))), "flight_actor", "epsilon", epsilon,
                  "[B] probabilities in [0, 1]", fix="epsilon")
    for name, state in (("own", own_state), ("pre-trained", pretrained.parts.actor_state)):
        if isinstance(state, dict) and "epsilon" in state and len(state["epsilon"]) != len(epsilon):
            raise ConfigError(f"flight_actor: the {name} actor state is for {len(state['epsilon'])} environments, "
                              f"epsilon for {len(epsilon)}. Build both policies for the same num_envs.")
    if not config.keep_own_epsilon and isinstance(own_state, dict) and "epsilon" in own_state:
        own_state = {**own_state, "epsilon": jnp.zeros_like(jnp.asarray(own_state["epsilon"]))}
    pair = flight_policy(own.policy, pretrained.parts.policy, config, candidate, bool(np.any(epsilon > 0)))
    frozen = pretrained.params

    def policy(params, observation, actor_state, key):
        return pair((params, frozen), observation, actor_state, key)

    state = {"own": own_state, "pretrained": pretrained.parts.actor_state, "epsilon": jnp.asarray(epsilon),
             "remaining": jnp.zeros(len(epsilon), jnp.int32)}
    carry = None if own.carry is None else (lambda s: own.carry(s["own"]))
    resume = None if own.resume is None else (lambda s, carried: {**s, "own": own.resume(s["own"], carried)})
    return ActorParts(policy, state, _observe(own, pretrained.parts), carry=carry, resume=resume)
