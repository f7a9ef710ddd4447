"""A policy from any checkpoint: one loader that turns a run directory of any agent into its evaluation
policy, frozen, with the actor state and observe hook the agent's record declares.

    loaded = load_policy("runs/demo", env.spec, num_envs=8)              # the latest checkpoint
    loaded = load_policy("runs/demo/checkpoints/2000", env.spec, 8)      # that step
    action, extras, state = loaded.parts.policy(loaded.params, obs, loaded.parts.actor_state, key)

A run directory is what `rillet train-online` (any registered agent: the record's `evaluator`) or
`rillet train-offline` (PAC: `discretised_policy` of the task whose spec matches, acting by the run's
--eval-action; a value agent, `train-offline AGENT`: the record's `evaluator`) wrote: config.json and
checkpoints/<step>. Where the evaluator reads the actors' carry (`ActorParts.resume`, e.g. Agent57's
best bandit arm), the carry saved with that checkpoint is put in, so the policy acts as the run's own
evaluations did. The parameters are the learner's acting network
at that step; nothing here updates them.

Errors (rillet.errors, each saying what to do): CheckpointError for a path that is not a run directory
or one of its checkpoints/<step> folders, a missing or unreadable config.json, a run with no checkpoint
(or not that step), or a checkpoint that does not fit its config; SpecMismatchError for a run trained on
an environment whose observation, action or number of actions differ from `spec`'s.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from rillet.datasets.specs import StepSpec
from rillet.errors import CheckpointError, SpecMismatchError
from rillet.learners.agents.registry import ActorParts

__all__ = ["LoadedPolicy", "load_policy", "resolve_checkpoint_path", "check_same_layout"]


@dataclasses.dataclass(frozen=True)
class LoadedPolicy:
    """A frozen evaluation policy restored from a run directory.

    agent:   the agent's name ("dqn", "r2d2", ..., "pac" for an offline run)
    parts:   ActorParts of the agent's evaluator for num_envs environments: ``parts.policy(params,
             observation [B, ...], actor_state, key) -> (action [B, ...], extras, actor_state)``
             (jitted), its initial actor state and observe hook
    params:  the network it acts with (the learner's acting parameters at `step`)
    config:  the run's config (OnlineConfig, or OfflineConfig for a `rillet train-offline` run)
    spec:    the StepSpec the run's actors recorded (the environment's spec plus the agent's extras)
    step:    the checkpoint step restored
    run_dir: the run directory (absolute)
    """

    agent: str
    parts: ActorParts
    params: Any
    config: Any
    spec: StepSpec
    step: int
    run_dir: str


def load_policy(run_dir: str, spec: StepSpec, num_envs: int) -> LoadedPolicy:
    """The evaluation policy of the run at `run_dir` (a run directory: its latest checkpoint; or one of
    its checkpoints/<step> folders: that step) for `num_envs` environments of `spec`'s layout.

    Raises CheckpointError or SpecMismatchError (see the module docstring)."""
    run_dir, step = resolve_checkpoint_path(run_dir)
    raw = _read_config(run_dir)
    step = _checkpoint_step(run_dir, step)
    if "data" in raw and "num_updates" in raw:
        return _load_offline_agent(run_dir, spec, num_envs, step)
    if "data" in raw and "replay" not in raw:
        return _load_offline(run_dir, raw, spec, num_envs, step)
    return _load_online(run_dir, raw, spec, num_envs, step)


def resolve_checkpoint_path(path: str) -> tuple[str, int | None]:
    """(run directory, step or None for the latest) of a run directory, its checkpoints/ folder or one
    of its checkpoints/<step> folders; CheckpointError if the path does not exist."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"'{path}' does not exist or is not a directory. Give the --run-dir of a "
                              "`rillet train-online` (or train-offline) run, or one of its checkpoints/<step>.")
    name, parent = os.path.basename(path), os.path.dirname(path)
    if name.isdigit() and os.path.basename(parent) == "checkpoints":
        return os.path.dirname(parent), int(name)
    if name == "checkpoints" and os.path.exists(os.path.join(parent, "config.json")):
        return parent, None
    return path, None


def check_same_layout(expected: StepSpec, trained: StepSpec, where: str) -> None:
    """SpecMismatchError unless `trained` (a run's environment) has `expected`'s observation and action
    shapes and dtypes and number of actions (extras and env ids may differ)."""
    problems = [f"{name}: this environment has {getattr(expected, name).shape} {getattr(expected, name).dtype}, "
                f"the run's has {getattr(trained, name).shape} {getattr(trained, name).dtype}"
                for name in ("observation", "action") if getattr(expected, name) != getattr(trained, name)]
    if expected.num_actions != trained.num_actions:
        problems.append(f"num_actions: this environment has {expected.num_actions}, the run's has "
                        f"{trained.num_actions}")
    if problems:
        raise SpecMismatchError(
            f"The policy in '{where}' was trained on {trained.env_id or 'another environment'}, whose spec differs "
            f"from {expected.env_id or 'this environment'}'s: " + "; ".join(problems) + ". Use a checkpoint "
            "trained on an environment with the same observations and actions (same --observation-indices "
            "too), or act in the run's environment.")


def _read_config(run_dir: str) -> dict:
    """The run's config.json as a dict; CheckpointError if it is missing or not a JSON object."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise CheckpointError(
            f"'{run_dir}' is not a `rillet train-online` run directory (nor a train-offline one): it has no "
            "config.json. Give the --run-dir a training run wrote, or one of its checkpoints/<step> folders.")
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise _corrupt_config(run_dir, e) from None
    if not isinstance(raw, dict):
        raise _corrupt_config(run_dir, f"a JSON {type(raw).__name__}, not an object")
    return raw


def _corrupt_config(run_dir: str, why: Any) -> CheckpointError:
    return CheckpointError(
        f"The config.json of '{run_dir}' cannot be read as a run's config ({why}). It was damaged or written "
        "by something else: restore it from a copy (it must match the checkpoints' config), or retrain.")


def _checkpoint_step(run_dir: str, step: int | None) -> int:
    """`step` (or the latest) if the run has that complete checkpoint; CheckpointError otherwise."""
    from rillet.pipelines.checkpointing import Checkpointer

    directory = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(directory):  # (a Checkpointer would create it)
        raise CheckpointError(f"'{run_dir}' has no checkpoints/ folder: the run has not saved a checkpoint yet. "
                              "Let it train past its first checkpoint (--checkpoint-every-updates), or give "
                              "another run directory.")
    ckpt = Checkpointer(directory, {})
    try:
        steps = ckpt.steps()
    finally:
        ckpt.close()
    if not steps:
        raise CheckpointError(f"'{run_dir}' holds no complete checkpoint under checkpoints/. Let the run train "
                              "past its first checkpoint (--checkpoint-every-updates), or give another run.")
    if step is not None and step not in steps:
        raise CheckpointError(f"'{run_dir}' has no complete checkpoint at step {step}; it holds steps {steps}. "
                              "Give one of those checkpoints/<step> folders, or the run directory for the latest.")
    return steps[-1] if step is None else step


def _load_online(run_dir: str, raw: dict, spec: StepSpec, num_envs: int, step: int) -> LoadedPolicy:
    """A `rillet train-online` run: the agent record's evaluator, with the actors' carry where it reads it
    (for a behaviour-transfer run with the candidate action, over the extended action set)."""
    from rillet.learners.agents import get_agent
    from rillet.pipelines.checkpointing import Checkpointer
    from rillet.pipelines.config import OnlineConfig
    from rillet.actors.environments import env_step_spec
    from rillet.pipelines.online import load_online_run
    from rillet.pipelines.transfer import pretrained_loader, transfer_evaluator

    try:
        config = OnlineConfig.from_json(raw)
    except (ValueError, TypeError, KeyError) as e:
        raise _corrupt_config(run_dir, repr(e)) from None
    env_spec = env_step_spec(config.env_id, config.observation_indices)
    check_same_layout(spec, env_spec, run_dir)
    config, run_spec, state = load_online_run(run_dir, step)
    agent = get_agent(config.agent)
    parts = agent.evaluator(run_spec, config.learner, num_envs)
    # a behaviour-transfer run with the candidate action acts through its own pre-trained policy
    parts = transfer_evaluator(config.transfer, parts, pretrained_loader(config.transfer, env_spec), env_spec,
                               num_envs)
    if parts.resume is not None:
        ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"), {})
        try:
            carried = ckpt.restore_actor(step)
        finally:
            ckpt.close()
        if carried is not None:
            parts = dataclasses.replace(parts, actor_state=parts.resume(parts.actor_state, carried))
    return LoadedPolicy(config.agent, parts, agent.network(state), config, run_spec, step, run_dir)


def _load_offline_agent(run_dir: str, spec: StepSpec, num_envs: int, step: int) -> LoadedPolicy:
    """A `rillet train-offline AGENT` run of a value agent: the agent record's evaluator. Its dataset must
    still be where the run read it (it gives the learner's spec)."""
    from rillet.learners.agents import get_agent
    from rillet.pipelines.offline_agents import load_offline_agent_run

    try:
        config, run_spec, state = load_offline_agent_run(run_dir, step)
    except (ValueError, TypeError, KeyError) as e:
        raise _corrupt_config(run_dir, repr(e)) from None
    check_same_layout(spec, run_spec, run_dir)
    agent = get_agent(config.agent)
    return LoadedPolicy(config.agent, agent.evaluator(run_spec, config.learner, num_envs), agent.network(state),
                        config, run_spec, step, run_dir)


def _load_offline(run_dir: str, raw: dict, spec: StepSpec, num_envs: int, step: int) -> LoadedPolicy:
    """A `rillet train-offline` run (PAC, one task per dataset): the task whose spec is `spec`'s layout,
    acting by the run's eval_action. Its datasets must still be where the run read them."""
    from rillet.actors.policies import discretised_policy
    from rillet.pipelines.offline import load_run

    try:
        config, tasks, state, _ = load_run(run_dir, step)
    except (TypeError, KeyError) as e:
        raise _corrupt_config(run_dir, repr(e)) from None
    errors = []
    for task in tasks:
        try:
            check_same_layout(spec, task.spec, f"{run_dir} (task {task.name})")
        except SpecMismatchError as e:
            errors.append(str(e))
            continue
        policy = discretised_policy(task.task_id, config.pac_config().num_bins, config.eval_action)
        run_spec = dataclasses.replace(task.spec, env_id=task.env_id)
        return LoadedPolicy("pac", ActorParts(policy, None), state.online, config, run_spec, step, run_dir)
    raise SpecMismatchError(f"No task of the offline run '{run_dir}' has this environment's spec:\n  "
                            + "\n  ".join(errors))
