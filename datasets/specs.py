"""The data contract: one `StepSpec` that actors, replay tables, datasets and learners all read.

A step is an RLDS step: ``observation, action, reward, discount, is_first, is_last, is_terminal``
plus optional ``extras``. `StepSpec.from_envpool` derives it from an EnvPool environment spec
(gymnasium or dm_env API); nothing else in rillet hard-codes a shape or dtype.

This module imports numpy only, so learners (which must run without TensorFlow) may use it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from rillet.errors import SpecMismatchError


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    """Shape and dtype of one array (per step, without batch or time axes)."""

    shape: tuple[int, ...]
    dtype: str  # numpy dtype name, e.g. "float32": a string so specs serialise to JSON

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def zeros(self, leading: tuple[int, ...] = ()) -> np.ndarray:
        return np.zeros(leading + self.shape, self.np_dtype)

    def to_json(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ArraySpec":
        return cls(tuple(int(x) for x in d["shape"]), str(d["dtype"]))


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """Specs of one RLDS step.

    observation: ArraySpec of o_t, e.g. (4,) float32 for CartPole, (4, 84, 84) uint8 for Atari.
    action: ArraySpec of a_t; () int32 for discrete actions.
    num_actions: number of discrete actions, or None for continuous actions.
    extras: name -> ArraySpec of per-step extras (log-probabilities, recurrent state, ...).
    reward, discount are () float32; is_first, is_last, is_terminal are () bool.
    """

    observation: ArraySpec
    action: ArraySpec
    num_actions: int | None = None
    extras: Mapping[str, ArraySpec] = dataclasses.field(default_factory=dict)
    env_id: str = ""

    reward = ArraySpec((), "float32")
    discount = ArraySpec((), "float32")
    flag = ArraySpec((), "bool")

    def fields(self) -> dict[str, Any]:
        """The step as a nested dict of ArraySpecs (the layout of a step pytree)."""
        return {
            "observation": self.observation,
            "action": self.action,
            "reward": self.reward,
            "discount": self.discount,
            "is_first": self.flag,
            "is_last": self.flag,
            "is_terminal": self.flag,
            "extras": dict(self.extras),
        }

    def with_extras(self, **extras: ArraySpec) -> "StepSpec":
        return dataclasses.replace(self, extras={**self.extras, **extras})

    def to_json(self) -> dict:
        return {
            "env_id": self.env_id,
            "observation": self.observation.to_json(),
            "action": self.action.to_json(),
            "num_actions": self.num_actions,
            "extras": {k: v.to_json() for k, v in sorted(self.extras.items())},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "StepSpec":
        return cls(
            observation=ArraySpec.from_json(d["observation"]),
            action=ArraySpec.from_json(d["action"]),
            num_actions=d.get("num_actions"),
            extras={k: ArraySpec.from_json(v) for k, v in d.get("extras", {}).items()},
            env_id=d.get("env_id", ""),
        )

    @classmethod
    def from_envpool(cls, env_spec: Any, env_id: str = "") -> "StepSpec":
        """Derives the spec from an EnvPool spec (``envpool.make_spec(...)`` or ``env.spec``).

        Works for both APIs: gymnasium-style ``observation_space``/``action_space`` and
        dm_env-style ``observation_spec()``/``action_spec()``, so a gymnasium env or a
        ``dm_env.Environment`` itself may be passed too. Dict observations of vectors (DM
        Control: position, velocity, ...) become one float32 vector, keys in sorted order (see
        `flatten_observation`); continuous actions are float32.
        """
        if hasattr(env_spec, "observation_space"):
            obs, act = env_spec.observation_space, env_spec.action_space
            num_actions = int(act.n) if hasattr(act, "n") else None
            if hasattr(obs, "spaces") and isinstance(obs.spaces, Mapping):
                obs = obs.spaces
        else:
            obs = env_spec.observation_spec()
            obs = getattr(obs, "obs", obs)  # dm_env API nests the array under State.obs
            act = env_spec.action_spec()
            num_actions = int(act.num_values) if hasattr(act, "num_values") else None
        if isinstance(obs, Mapping):
            obs = ArraySpec((sum(int(np.prod(part.shape)) for part in obs.values()),), "float32")
        action_dtype = "int32" if num_actions is not None else "float32"
        return cls(
            observation=ArraySpec(tuple(obs.shape), np.dtype(obs.dtype).name),
            action=ArraySpec(() if num_actions is not None else tuple(act.shape), action_dtype),
            num_actions=num_actions,
            env_id=env_id,
        )

    def check_compatible(self, other: "StepSpec", what: str = "data") -> None:
        """Raises SpecMismatchError unless `other` has the same observation/action layout."""
        problems = []
        for name in ("observation", "action"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                problems.append(f"{name}: expected {mine.shape} {mine.dtype}, got {theirs.shape} {theirs.dtype}")
        if self.num_actions != other.num_actions:
            problems.append(f"num_actions: expected {self.num_actions}, got {other.num_actions}")
        if problems:
            raise SpecMismatchError(
                f"The {what} does not match the learner's spec ({self.env_id or 'unnamed env'}): "
                + "; ".join(problems)
                + ". Use replay or data generated from the same environment, or build the learner "
                "from the data's spec."
            )


def check_batch(spec_tree: Any, batch: Mapping[str, Any], leading_dims: int, what: str = "batch") -> None:
    """Checks a nested dict of arrays against a nested dict of ArraySpecs.

    leading_dims: how many batch/time axes precede each spec's shape (1 for [B, ...]).
    Raises SpecMismatchError naming the first offending field.
    """

    def walk(spec, value, path):
        if isinstance(spec, Mapping):
            if not isinstance(value, Mapping):
                raise SpecMismatchError(f"{what}: field '{path}' should be a dict of arrays, got {type(value).__name__}.")
            missing = sorted(set(spec) - set(value))
            if missing:
                raise SpecMismatchError(f"{what}: missing field(s) {missing} under '{path or '/'}'; has {sorted(value)}.")
            for k, s in spec.items():
                walk(s, value[k], f"{path}/{k}" if path else k)
            return
        arr = np.asarray(value)
        want = spec.shape
        got = arr.shape[leading_dims:]
        if got != want or np.dtype(arr.dtype) != spec.np_dtype:
            raise SpecMismatchError(
                f"{what}: field '{path}' has shape {got} dtype {arr.dtype} after {leading_dims} leading "
                f"axes; the spec says {want} {spec.dtype}. Check that the replay table / dataset was "
                "written for this environment and agent."
            )

    walk(spec_tree, batch, "")


def flatten_observation(obs: Any) -> np.ndarray:
    """A dict of per-env arrays {name: [B, ...]} -> [B, D] float32, keys sorted (as `from_envpool`)."""
    if not isinstance(obs, Mapping):
        return obs
    parts = [np.asarray(obs[k], np.float32).reshape(len(obs[k]), -1) for k in sorted(obs)]
    return np.concatenate(parts, axis=1)
