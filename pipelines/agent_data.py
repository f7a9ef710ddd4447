"""An agent's replay items read from an RLDS dataset on disk, in the layout its learner samples from
Reverb, so that saved data and online replay feed one learner the same batch:

    replay = ReplayConfig(sequence_period=10, batch_size=32)
    batches = agent_batches("/data/cartpole", "himo", HiMoConfig(...), replay)
    state, metrics = get_agent("himo").update(state, next(batches), config)

The agent record's `replay_item(config)` gives the item, as it does for the replay writer: sequences of
its length (R2D2's burn_in + trace_length + 1, HiMo's burn_in + trace_length + n_step + lookahead) cut
from each episode every replay.sequence_period steps, zero-padded past the episode's end with "mask"
False there (the `SequenceWriter`'s layout: step fields [B, L, ...], extras, mask [B, L]); or n-step
transitions (replay.n_step, the gamma given; the `NStepTransitionWriter`'s layout).

A dataset written by another policy (a random one, another agent) lacks the per-step extras a
recurrent actor records; those a learner can do without are filled from the data (`RECURRENT_FILLS`):
prev_action / prev_reward from the episode's previous step (0 at its first step); the recurrent state
as zeros, so the learner starts each sequence from a zero state and its burn-in warms the core (R2D2's
"zero start state"); policy_index 0 (the exploitation policy); behaviour_prob NaN (no estimator reads
it; NaN makes a future reader loud). Any other missing extra raises SpecMismatchError naming it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rillet.datasets.rlds_loader import rlds
from rillet.datasets.rlds_reader import RldsEpisodes
from rillet.datasets.specs import StepSpec
from rillet.errors import SpecMismatchError
from rillet.learners.agents import get_agent

RECURRENT_FILLS = ("prev_action", "prev_reward", "recurrent_state_h", "recurrent_state_c", "policy_index",
                   "behaviour_prob")
"""Extras `agent_batches` fills when the dataset lacks them (see the module docstring)."""


def previous_step(steps: dict, offsets: np.ndarray) -> dict:
    """steps {field: [N, ...]} (episodes back to back, episode e starting at row offsets[e]) plus the
    extras prev_action [N] and prev_reward [N]: the previous step's action and reward, 0 at a first step.
    Extras the data already holds are kept as they are."""
    extras = dict(steps.get("extras", {}))
    for name, field in (("prev_action", "action"), ("prev_reward", "reward")):
        if name not in extras:
            column = np.roll(np.asarray(steps[field]), 1, axis=0)
            column[np.asarray(offsets, np.int64)] = 0
            extras[name] = column
    return {**steps, "extras": extras}


class AgentBatches:
    """Iterator of an agent's batches over an `rlds` iterator; get_state()/set_state() are the
    loader's, as a str (a checkpoint's meta holds it; a resume continues mid-epoch exactly)."""

    def __init__(self, records, convert):
        self.records, self.convert = records, convert

    def __iter__(self) -> "AgentBatches":
        return self

    def __next__(self) -> dict:
        return self.convert(next(self.records))

    def get_state(self) -> str:
        return self.records.get_state().decode()

    def set_state(self, state: str) -> None:
        self.records.set_state(state.encode())


def agent_batches(path: str, agent: str, config: Any, replay: Any, *, gamma: float = 0.99, split: str = "train",
                  seed: int = 0, shuffle: bool = True, num_epochs: int | None = None,
                  **loader: Any) -> AgentBatches:
    """Endless (num_epochs=None) batches of `agent`'s replay items under learner `config` from the RLDS
    dataset at `path`: replay.batch_size items, sequences every replay.sequence_period steps or
    replay.n_step transitions discounted by gamma (the run's --gamma). Other keyword arguments go to
    `rlds` (worker_count, shuffle_buffer, min_return, ...). Raises SpecMismatchError when the data lacks
    an extra the agent's learner needs and cannot be filled."""
    record = get_agent(agent)
    item = record.replay_item(config)
    spec = learner_spec(path, split, record, config)
    common = dict(split=split, batch_size=replay.batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs)
    if item.kind == "transition":
        records = rlds(path, transform="nstep", n=replay.n_step, gamma=gamma, **common, **loader)
        return AgentBatches(records, lambda b: _checked(record, spec, _transition_batch(b, spec)))
    records = rlds(path, transform="windows", window=item.length, stride=replay.sequence_period, every_start=True,
                   derive=previous_step, **common, **loader)
    return AgentBatches(records, lambda b: _checked(record, spec, _sequence_batch(b, spec)))


def learner_spec(path: str, split: str, record, config) -> StepSpec:
    """The spec agent `record`'s learner takes under `config`, from the dataset's env spec;
    SpecMismatchError when the dataset lacks an extra the learner needs and cannot be filled."""
    fills = RECURRENT_FILLS if record.replay_item(config).kind == "sequence" else ()
    data_spec = RldsEpisodes(path, split).spec
    if data_spec is None:
        raise SpecMismatchError(f"'{path}' has no step spec in its dataset card; write it with rillet "
                                "(`rillet dataset generate`, RldsWriter) or `rillet dataset convert` it first.")
    env_spec = StepSpec(data_spec.observation, data_spec.action, num_actions=data_spec.num_actions)
    spec = record.spec(env_spec, config)
    missing = sorted(set(spec.extras) - set(data_spec.extras) - set(fills))
    if missing:
        raise SpecMismatchError(f"agent {record.name!r} learns from the per-step extras {missing}, which "
                                f"'{path}' does not record; generate the data with that agent's actors.")
    return spec


def _sequence_batch(batch: dict, spec: StepSpec) -> dict:
    """A windows batch {"steps": {...}, "mask"} as a replay sequence batch, missing extras filled."""
    steps = batch["steps"]
    shape = np.shape(steps["reward"])  # [B, L]
    extras = {}
    for name, s in spec.extras.items():
        if name in steps["extras"]:
            extras[name] = steps["extras"][name]
        else:
            fill = np.nan if name == "behaviour_prob" else 0
            extras[name] = np.full(shape + tuple(s.shape), fill, s.np_dtype)
    return {**{k: v for k, v in steps.items() if k != "extras"}, "extras": extras, "mask": batch["mask"]}


def _transition_batch(batch: dict, spec: StepSpec) -> dict:
    """An nstep batch as a replay transition batch: the spec's extras only, no is_terminal."""
    extras = {name: batch["extras"][name] for name in spec.extras}
    return {**{k: v for k, v in batch.items() if k not in ("extras", "is_terminal")}, "extras": extras}


def _checked(record, spec: StepSpec, batch: dict) -> dict:
    record.check_batch(spec, batch)
    return batch
