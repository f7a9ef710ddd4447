"""Offline data for the PAC runner: one task per RLDS dataset, equal-share mixed batches with a
checkpointable state, and the validation split. See `rillet.pipelines.offline` for the whole story.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np

from rillet.errors import CheckpointError, SpecMismatchError
from rillet.learners import pac
from rillet.pipelines.offline_config import OfflineConfig


@dataclasses.dataclass(frozen=True)
class Task:
    """One dataset = one task."""

    task_id: int
    name: str  # env_id, with "#<task_id>" appended when two datasets share it
    env_id: str
    path: str
    spec: Any  # StepSpec from the card
    data_return_mean: float | None
    data_episodes: int
    splits: dict

    @property
    def obs_size(self) -> int:
        return int(self.spec.observation.shape[0])

    @property
    def action_size(self) -> int:
        return int(self.spec.action.shape[0])


def open_tasks(paths: Sequence[str], check_env: bool = True) -> list[Task]:
    """Opens each dataset (the reader's DatasetPathError etc. propagate), checks PAC can train on it
    (SpecMismatchError otherwise) and that its spec matches its environment."""
    from rillet.datasets.rlds_reader import rlds_episodes

    tasks = []
    for i, path in enumerate(paths):
        episodes = rlds_episodes(path)  # raises for a path that is not a (complete) RLDS dataset
        card = episodes.card
        if episodes.spec is None or not card.get("env_id"):
            raise SpecMismatchError(f"dataset '{path}' has no rillet card ({os.path.join(path, 'rillet_card.json')}) "
                                    "with an env_id and a spec; write it with rillet's RldsWriter or "
                                    "`rillet dataset generate`.")
        pac.task_sizes(episodes.spec)  # SpecMismatchError for images / discrete actions
        if check_env:
            from rillet.actors.environments import env_step_spec

            env = env_step_spec(card["env_id"])
            if (env.observation.shape, env.action.shape) != (episodes.spec.observation.shape,
                                                             episodes.spec.action.shape):
                raise SpecMismatchError(
                    f"dataset '{path}' has observation {episodes.spec.observation.shape} / action "
                    f"{episodes.spec.action.shape}, but its environment {card['env_id']} has "
                    f"{env.observation.shape} / {env.action.shape}; it cannot be evaluated there.")
        with open(os.path.join(path, "dataset_info.json")) as f:
            splits = {s["name"]: sum(int(n) for n in s.get("shardLengths", [])) for s in json.load(f)["splits"]}
        tasks.append(Task(i, card["env_id"], card["env_id"], os.path.abspath(path), episodes.spec,
                          card.get("return_mean"), int(card.get("num_episodes", len(episodes))), splits))
    counts = {}
    for t in tasks:
        counts[t.env_id] = counts.get(t.env_id, 0) + 1
    return [dataclasses.replace(t, name=f"{t.env_id}#{t.task_id}") if counts[t.env_id] > 1 else t for t in tasks]


class MixedBatches:
    """Endless PAC batches with an equal share of rows per task, from one Grain iterator per task.

    next() -> {"observation", "next_observation" [B, obs_max] f32, "action" [B, D_max] f32,
    "reward" [B] f32, "discount" [B] f32 (gamma included), "task_id" [B] int32}, tasks in order.
    get_state() -> list of per-task Grain states (str); set_state(list) restores them.
    """

    def __init__(self, paths: Sequence[str], tasks: Sequence[Task], split: str, config: OfflineConfig, seed: int):
        from rillet.datasets.rlds_loader import rlds

        self.tasks = list(tasks)
        self.per_task = config.batch_size // len(self.tasks)
        self.gamma_factor = config.gamma if config.transform == "transitions" else 1.0
        self.obs_max = max(t.obs_size for t in self.tasks)
        self.d_max = max(t.action_size for t in self.tasks)
        self.iterators = [
            rlds(p, split=split, transform=config.transform, n=config.n_step, gamma=config.gamma,
                 batch_size=self.per_task, seed=seed + t.task_id, shuffle=True, num_epochs=None)
            for p, t in zip(paths, self.tasks)]

    def __iter__(self) -> "MixedBatches":
        return self

    def __next__(self) -> dict:
        return self.mix([next(it) for it in self.iterators])

    def mix(self, parts: Sequence[dict]) -> dict:
        b = self.per_task * len(parts)
        out = {"observation": np.zeros((b, self.obs_max), np.float32),
               "next_observation": np.zeros((b, self.obs_max), np.float32),
               "action": np.zeros((b, self.d_max), np.float32),
               "reward": np.zeros((b,), np.float32), "discount": np.zeros((b,), np.float32),
               "task_id": np.zeros((b,), np.int32)}
        for j, (task, part) in enumerate(zip(self.tasks, parts)):
            rows = slice(j * self.per_task, (j + 1) * self.per_task)
            out["observation"][rows, :task.obs_size] = part["observation"]
            out["next_observation"][rows, :task.obs_size] = part["next_observation"]
            out["action"][rows, :task.action_size] = part["action"]
            out["reward"][rows] = part["reward"]
            out["discount"][rows] = self.gamma_factor * np.asarray(part["discount"], np.float32)
            out["task_id"][rows] = task.task_id
        return out

    def get_state(self) -> list[str]:
        return [it.get_state().decode() for it in self.iterators]

    def set_state(self, states: Sequence[str]) -> None:
        if len(states) != len(self.iterators):
            raise CheckpointError(f"the checkpoint holds {len(states)} loader states for {len(self.iterators)} tasks.")
        for it, s in zip(self.iterators, states):
            it.set_state(s.encode())


def task_sources(tasks: Sequence[Task], config: OfflineConfig, run_dir: str) -> tuple[list[str], list[str | None]]:
    """Per task, (the path whose "train" split trains, the path whose "validation" split validates or None).

    A dataset's own validation split is used as is; otherwise, with validation_fraction > 0, a split
    copy is made once under run_dir/data (train and validation episodes disjoint) and used for both."""
    from rillet.pipelines.dataset_cli import split

    train, val = [], []
    for t in tasks:
        if t.splits.get("validation", 0) > 0:
            train.append(t.path)
            val.append(t.path)
        elif config.validation_fraction > 0:
            dest = os.path.join(run_dir, "data", f"task{t.task_id}-split{config.validation_fraction:g}-seed{config.seed}")
            if not os.path.exists(dest):  # written atomically by `split`: complete if it exists
                split(t.path, dest, validation_fraction=config.validation_fraction, seed=config.seed)
            train.append(dest)
            val.append(dest)
        else:
            train.append(t.path)
            val.append(None)
    return train, val


