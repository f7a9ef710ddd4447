"""PAC (Perceiver actor-critic) online on one continuous-control task: n-step transitions, actions
sampled per dimension from the discretised policy (its own exploration), task id 0 recorded as an
extra; evaluated by the policy's most likely bin. Offline PAC (`rillet train-offline`) trains the
same learner from RLDS datasets."""

from __future__ import annotations

from rillet.actors.policies import discretised_policy
from rillet.datasets.specs import ArraySpec, check_batch
from rillet.learners import pac
from rillet.learners.agents.registry import ActorParts, Agent, ReplayItem, register

TRANSITION_FIELDS = ("observation", "action", "reward", "discount", "next_observation")


def learner_batch(batch) -> dict:
    """A replayed transition batch (task id among the extras) as PAC's batch; offline batches, which
    hold "task_id" already, pass unchanged."""
    if "task_id" in batch:
        return batch
    return {**{k: batch[k] for k in TRANSITION_FIELDS}, "task_id": batch["extras"]["task_id"]}


def _check_batch(spec, batch) -> None:
    check_batch({"observation": spec.observation, "action": spec.action, "reward": spec.reward,
                 "discount": spec.discount, "next_observation": spec.observation}, batch,
                leading_dims=1, what="PAC transition batch")


PAC = register(Agent(
    name="pac",
    config_type=pac.PACConfig,
    spec=lambda env_spec, config: env_spec.with_extras(task_id=ArraySpec((), "int32")),
    init=pac.init,
    update=lambda state, batch, config: pac.update(state, learner_batch(batch), config),
    network=lambda state: state.online,
    actor=lambda spec, config, num_envs, exploration: ActorParts(discretised_policy(0, config.num_bins, "sample"), None),
    evaluator=lambda spec, config, num_envs: ActorParts(discretised_policy(0, config.num_bins, "mode"), None),
    replay_item=lambda config: ReplayItem("transition"),
    check_batch=_check_batch,
    prioritized=False,
    defaults=lambda: pac.PACConfig(alpha=0.0, network="test"),  # online: pure policy improvement, a small Perceiver
    summary="Perceiver actor-critic, distributional critic, discretised continuous actions",
))
