"""The learner as a stage, and the stages around it that online and offline runs share.

    ticks = (Stream(batches)                                   # Reverb samples or Grain batches
             | learn(agent.update, state, config, start=step)   # -> Tick(step, state, metrics, batch)
             | every(100, log_metrics(writer, "learner/"))
             | every(2_000, save_checkpoint(ckpt, meta))
             | every(5_000, evaluate))
    final = last(ticks)
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterator

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet.errors import DivergenceError

__all__ = ["Tick", "learn", "skip_non_finite", "log_metrics", "save_checkpoint", "check_finite", "LoopClock"]


@dataclasses.dataclass(frozen=True)
class Tick:
    """What the learner stage emits after each update: the update count, the new learner state, the
    update's metrics, and the batch it learned from (with replay keys, when sampled from Reverb)."""

    step: int
    state: Any
    metrics: dict
    batch: Any


def learn(update: Callable, state: Any, config: Any, start: int = 0,
          data: Callable[[Any], Any] = lambda batch: batch) -> Callable[[Iterator], Iterator[Tick]]:
    """Transform: batches -> Ticks. Each batch updates the state: ``update(state, data(batch), config)``;
    `start` is the update count of `state` (a restored checkpoint's)."""

    def stage(batches):
        current, step = state, start
        for batch in batches:
            current, metrics = update(current, data(batch), config)
            step += 1
            yield Tick(step, current, metrics, batch)

    return stage


def skip_non_finite(data: Callable[[Any], Any] = lambda batch: batch,
                    on_skip: Callable[[int], None] = lambda skipped: None) -> Callable[[Iterator], Iterator]:
    """Transform: drops every batch with a NaN or inf in a floating-point leaf of data(batch) (rewards,
    discounts, float observations; checked on the host with numpy) and calls on_skip(skipped so far)."""

    def finite(batch) -> bool:
        leaves = (np.asarray(x) for x in jax.tree.leaves(data(batch)))
        return all(np.isfinite(x).all() for x in leaves if np.issubdtype(x.dtype, np.floating))

    def stage(batches):
        skipped = 0
        for batch in batches:
            if finite(batch):
                yield batch
            else:
                skipped += 1
                on_skip(skipped)

    return stage


def log_metrics(writer, prefix: str, position: Callable[[Tick], int] = lambda tick: tick.step,
                extra: Callable[[Tick], dict] = lambda tick: {}) -> Callable[[Tick], None]:
    """A tick callback writing the update's scalar metrics (and `extra(tick)`) at `position(tick)`."""

    def write(tick: Tick) -> None:
        writer.write(position(tick), {**tick.metrics, **extra(tick)}, prefix=prefix)

    return write


def check_finite(state: Any, step: int, checkpointer=None) -> None:
    """Raises DivergenceError if any floating-point array of the learner state is NaN or inf (after
    `step` updates), naming the last checkpoint a resume would start from."""
    leaves = jax.tree.leaves(eqx.filter(state, eqx.is_inexact_array))
    if leaves and not bool(_all_finite(leaves)):
        last = checkpointer.latest_step() if checkpointer is not None else None
        kept = (f"the last finite checkpoint (update {last}) is kept in {checkpointer.directory}" if last is not None
                else "no checkpoint was written")
        raise DivergenceError(f"the learner's parameters became non-finite (NaN or inf) by update {step}; {kept}. "
                              "Lower the learning rate, clip gradients, or check the data for NaN/inf rewards "
                              "and observations.")


@jax.jit
def _all_finite(leaves: list) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def save_checkpoint(checkpointer, meta: Callable[[Tick], dict],
                    actor: Callable[[], Any] = lambda: None) -> Callable[[Tick], None]:
    """A tick callback saving the learner state at its update count, with `meta(tick)` (counters,
    loader positions) and `actor()` (the actors' carried state, or None) beside it; a state with
    non-finite parameters is never saved (`check_finite`: DivergenceError)."""

    def save(tick: Tick) -> None:
        check_finite(tick.state, tick.step, checkpointer)
        checkpointer.save(tick.step, tick.state, meta(tick), actor=actor())

    return save


class LoopClock:
    """Where a training loop's time goes: `timed(batches)` charges the time spent waiting for the next
    batch; `lap(tick)` (after the update has finished) closes the loop time of one update and
    `restart(tick)` (after evaluations and checkpoints) opens the next, so only loading, updating and
    logging count. The first update (compilation) is not counted."""

    def __init__(self):
        self.loader_s = self.loop_s = 0.0
        self.timed_updates = 0
        self._started = None
        self._waited = 0.0
        self._first = True

    def timed(self, batches) -> Iterator:
        for batch in batches:  # the time in next() is spent before this line runs
            self._waited = time.perf_counter() - self._started
            yield batch

    def start(self) -> None:
        self._started = time.perf_counter()

    def lap(self, tick: Tick) -> None:
        if self._first:
            self._first = False
            return
        self.loader_s += self._waited
        self.loop_s += time.perf_counter() - self._started
        self.timed_updates += 1

    def restart(self, tick: Tick) -> None:
        self._started = time.perf_counter()
