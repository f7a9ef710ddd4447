"""TD3 with multi-step critic targets (n-step, Peng's Q(lambda), Retrace, tree-backup) on sequences from
uniform replay: actors act with the deterministic tanh policy plus Gaussian noise (after a uniformly
random warm-up), recording log mu(a|x) for Retrace's density ratio; the evaluator is the deterministic
policy. Continuous actions are in [-1, 1]^A, rescaled to the env's bounds by the environment adapters."""

from __future__ import annotations

from rillet.actors.exploration import GaussianNoise
from rillet.actors.policies import deterministic, gaussian_actor_state, gaussian_exploration
from rillet.learners import td3
from rillet.learners.agents.registry import ActorParts, Agent, ReplayItem, learner_fields, register
from rillet.learners.recurrent_value import check_sequence_batch


def _actor(spec, config: td3.TD3Config, num_envs: int, exploration: dict) -> ActorParts:
    """Gaussian exploration (exploration {"noise_scale": [num_envs]}); the warm-up left outlives episodes
    (checkpointed, so a resumed run does not warm up again)."""
    state = gaussian_actor_state(exploration["noise_scale"], config.warmup_steps)
    return ActorParts(gaussian_exploration(td3.policy_action), state,
                      carry=lambda s: {"warmup_left": s["warmup_left"]},
                      resume=lambda s, carried: {**s, "warmup_left": carried["warmup_left"]})


def _evaluator(spec, config: td3.TD3Config, num_envs: int) -> ActorParts:
    return ActorParts(deterministic(td3.policy_action), None)


BATCH_SEQUENCES = 64  # x trace_length 5: 320 transitions per update, near TD3's 256 (this library's choice)


def replay_options(config: td3.TD3Config, batch_size: int = BATCH_SEQUENCES) -> dict:
    """The replay options a TD3 run starts from: sequences written every trace_length steps (each step
    learned from once per pass), sampled uniformly at about one update per env step (samples per insert =
    period x batch size, as TD3), 1M transitions kept, learning from 1k transitions on."""
    period = config.trace_length
    return {"sequence_period": period, "batch_size": batch_size, "samples_per_insert": float(period * batch_size),
            "max_size": 1_000_000 // period, "min_size_to_sample": max(batch_size, 1_000 // period)}


def _check_batch(spec, batch) -> None:
    """A [B, L] sequence batch of `spec`'s steps, from continuous-action steps."""
    td3.check_continuous_actions(spec)
    check_sequence_batch(spec, batch)


TD3 = register(Agent(
    name="td3",
    **learner_fields(td3, td3.TD3Config),
    network=lambda state: state.actor,
    actor=_actor,
    evaluator=_evaluator,
    replay_item=lambda config: ReplayItem("sequence", config.sequence_length),
    check_batch=_check_batch,
    exploration=lambda config, actor: GaussianNoise(config.exploration_noise),
    prioritized=False,
    replay_defaults=replay_options,
    summary="TD3 (twin critics, target smoothing, delayed actor) with n-step/Peng/Retrace/tree-backup "
            "critic targets on replayed sequences (keep --replay.sequence-period <= --td3.trace-length)",
))
