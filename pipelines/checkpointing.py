"""Checkpoints with orbax-checkpoint: learner state (arrays of an Equinox pytree), counters, RNG
and the config fingerprint. Orbax writes each step to a temporary directory and renames it when
complete, so a crash never leaves a checkpoint that looks complete but is not.

Layout: <run_dir>/checkpoints/<step>/{state, meta} and, for agents whose actors carry state across
episodes (`ActorParts.carry`), actor.
"""

from __future__ import annotations

import json
import os
from typing import Any, Collection

import equinox as eqx
import jax
import numpy as np
import orbax.checkpoint as ocp

from rillet.errors import CheckpointError


class Checkpointer:
    """Saves and restores ``(learner_state, meta)``; meta is a JSON dict holding counters and
    the config fingerprint, checked on restore.

    retired_keys: fingerprint keys that an older rillet wrote and that no longer identify a run (an
    option that became an execution choice); they are dropped, at any depth, from a checkpoint's stored
    fingerprint before the comparison, so such checkpoints still resume."""

    def __init__(self, directory: str, fingerprint: dict, max_to_keep: int = 3,
                 retired_keys: Collection[str] = ()):
        self.directory = os.path.abspath(directory)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # normalise tuples -> lists
        self.retired_keys = frozenset(retired_keys)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            item_names=("state", "meta", "actor"),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def steps(self) -> list[int]:
        """The steps of the complete checkpoints under the directory, ascending."""
        return sorted(int(s) for s in self._manager.all_steps())

    def save(self, step: int, learner_state: Any, meta: dict, actor: Any = None) -> None:
        """Saves the learner state's arrays, meta (+ the fingerprint) and, if given, the actors'
        carried state (a pytree of arrays) as one step. A step saved again (a run that ends, or is
        resumed and ends, with no update since its last checkpoint, while its actors and counters moved
        on) replaces the older one: orbax would silently keep the first. A crash between the removal and
        the new save leaves the earlier steps (max_to_keep), never a partial one."""
        if step in self.steps():
            self._manager.delete(step)
        items = {"state": ocp.args.StandardSave(eqx.filter(learner_state, eqx.is_array)),
                 "meta": ocp.args.JsonSave({**meta, "fingerprint": self.fingerprint})}
        if actor is not None:
            items["actor"] = ocp.args.StandardSave(actor)
        self._manager.save(step, args=ocp.args.Composite(**items))
        self._manager.wait_until_finished()

    def restore_actor(self, step: int | None = None) -> Any:
        """The actors' carried state saved with the latest (or given) step, as numpy arrays; None if
        that step has none (an agent whose actors carry nothing, or no checkpoint)."""
        step = self.latest_step() if step is None else step
        if step is None or not os.path.isdir(os.path.join(self.directory, str(step), "actor")):
            return None
        restored = self._manager.restore(step, args=ocp.args.Composite(actor=ocp.args.StandardRestore()))["actor"]
        return jax.tree.map(np.asarray, restored)

    def restore(self, template_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores into the structure of `template_state` (e.g. a freshly initialised state).

        Raises CheckpointError if there is none, if it was written with another config, or if its arrays
        do not have the template's shapes (a state layout written by another rillet version).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"No checkpoint under {self.directory}.")
        if step not in self.steps():
            raise CheckpointError(f"No complete checkpoint at step {step} under {self.directory} (it holds steps "
                                  f"{self.steps()}). Give one of those steps, or omit it for the latest.")
        meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if _without(meta.get("fingerprint"), self.retired_keys) != self.fingerprint:
            raise CheckpointError(
                f"The checkpoint at {self.directory} (step {step}) was written with a different config:\n"
                f"  checkpoint: {json.dumps(meta.get('fingerprint'), sort_keys=True)}\n"
                f"  this run:   {json.dumps(self.fingerprint, sort_keys=True)}\n"
                "Resume with the same env/agent/learner options, or choose a new --run-dir."
            )
        arrays, static = eqx.partition(template_state, eqx.is_array)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, arrays)
        layout = (f"The checkpoint at {self.directory} (step {step}) does not fit this learner's state layout "
                  "(it changed since the checkpoint was written)")
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract)))["state"]
        except ValueError as e:  # orbax: a stored shape that cannot become the requested one
            raise CheckpointError(f"{layout}: {e} Start a new --run-dir.") from None
        for (path, want), got in zip(jax.tree_util.tree_flatten_with_path(abstract)[0], jax.tree.leaves(restored)):
            if tuple(got.shape) != tuple(want.shape):
                raise CheckpointError(f"{layout}: {jax.tree_util.keystr(path)} has shape {tuple(got.shape)}, the "
                                      f"learner expects {tuple(want.shape)}. Start a new --run-dir.")
        return eqx.combine(restored, static), meta

    def close(self) -> None:
        self._manager.close()


def _without(tree: Any, keys: frozenset) -> Any:
    """`tree` (JSON: dicts, lists, scalars) with every dict entry named in `keys` removed, at any depth."""
    if isinstance(tree, dict):
        return {k: _without(v, keys) for k, v in tree.items() if k not in keys}
    if isinstance(tree, list):
        return [_without(v, keys) for v in tree]
    return tree


def restore_state(directory: str, fingerprint: dict, template: Any, step: int | None = None) -> Any:
    """The learner state a run's checkpoint directory holds at its latest (or given) step, restored
    into `template` (a freshly initialised state) and checked against `fingerprint`; the manager closed."""
    ckpt = Checkpointer(directory, fingerprint)
    try:
        return ckpt.restore(template, step)[0]
    finally:
        ckpt.close()
